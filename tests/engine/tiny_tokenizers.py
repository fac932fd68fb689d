"""Tiny tokenizers trained offline on a few sentences, for the tokenizer and streaming tests.

Two families matter to the engine: byte-level BPE (GPT-2, Llama 3, Qwen: a token may hold part of a
UTF-8 character) and SentencePiece-style BPE with a "▁" word marker and byte fallback (Llama 2,
Mistral: decoding a token alone loses its leading space).
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]

CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Streaming text should never show a broken character.",
    "Emoji: 😀 🎉 👍🏽 ❤️ and flags 🇫🇷.",
    "中文测试：你好，世界。日本語のテキストも少し。",
    "Ünïcödé àccents, Ελληνικά, русский текст, עברית.",
    "def f(x):\n    return x * 2  # code with    spaces",
]


def byte_level_bpe(vocab_size: int = 400) -> Tokenizer:
    """GPT-2-style byte-level BPE; the small vocabulary leaves emoji and CJK split across tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok


def sentencepiece_bpe(vocab_size: int = 300) -> Tokenizer:
    """Llama-2-style BPE: "▁" for spaces, byte fallback for characters outside the vocabulary."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")  # "▁" starts a word
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60, show_progress=False
    )
    tok.train_from_iterator([s for s in CORPUS if s.isascii()] * 3, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # byte-fallback tokens, as SentencePiece models carry them
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    spec["model"]["fuse_unk"] = True
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    return Tokenizer.from_str(json.dumps(spec))
