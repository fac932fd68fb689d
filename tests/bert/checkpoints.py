"""Tiny random-weight BERT checkpoints in the sentence-transformers layout, and the reference the
plugin is checked against: transformers' ``BertModel`` + its tokenizer + sentence-transformers'
pooling (re-implemented here over a padded, masked batch, as its Pooling module does it).

The tokenizer.json carries padding (to 64) and truncation (at 48) settings of its own, as
all-MiniLM-L6-v2's does: the plugin must ignore them as transformers does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tests.engine.tiny_tokenizers import CORPUS

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
MAX_SEQ_LENGTH = 24

SENTENCES = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "   padded with spaces   ",
    "Streaming text should never show a broken character. " * 6,  # longer than MAX_SEQ_LENGTH tokens
    "中文测试：你好，世界。",
    "Ünïcödé àccents, Ελληνικά, русский текст.",
    "def f(x): return x * 2",
    "a",
]


def wordpiece_tokenizer(lowercase: bool = False) -> Tokenizer:
    """BERT-style WordPiece ([CLS] text [SEP]) trained on the shared tiny corpus."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS * 3, trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                                   show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.enable_padding(length=64, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(48)
    return tok


def hf_bert(vocab_size: int, seed: int = 0, masked_lm: bool = False, **overrides):
    """A seeded transformers ``BertModel`` (or ``BertForMaskedLM``: weights under ``bert.``), float32, eval.

    Weights are redrawn wider than transformers' std 0.02 so every layer moves the states.
    """
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, **{**TINY, **overrides})
    model = (BertForMaskedLM if masked_lm else BertModel)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.uniform_(0.8, 1.2) if name.endswith("weight") else p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.15)
    return model


def write_checkpoint(folder: Path, model, tokenizer: Tokenizer, pooling: dict[str, bool] | None = None,
                     normalize: bool = True, max_seq_length: int | None = MAX_SEQ_LENGTH,
                     do_lower_case: bool = False) -> Path:
    """``save_pretrained`` + tokenizer files + sentence-transformers files (modules.json, 1_Pooling/, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": model.config.hidden_size, **(pooling or {"pooling_mode_mean_tokens": True})}))
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_seq_length, "do_lower_case": do_lower_case}))
    return folder


def hf_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def reference_pool(hidden: torch.Tensor, mask: torch.Tensor, modes: list[str]) -> torch.Tensor:
    """sentence-transformers' Pooling.forward over a padded batch: ``hidden [B, L, H]``, ``mask [B, L]``."""
    m = mask[..., None].to(hidden.dtype)
    lens = m.sum(1).clamp(min=1e-9)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[:, 0])
        elif mode == "max":
            out.append(hidden.masked_fill(m == 0, -1e9).max(1).values)
        elif mode == "mean":
            out.append((hidden * m).sum(1) / lens)
        elif mode == "mean_sqrt_len_tokens":
            out.append((hidden * m).sum(1) / lens.sqrt())
        elif mode == "weightedmean":
            w = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype)[None, :, None] * m
            out.append((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9))
        elif mode == "lasttoken":
            out.append(hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1])
    return torch.cat(out, 1)


def reference_embeddings(model, tokenizer, texts: list[str], modes: list[str], normalize: bool,
                         max_length: int, lower: bool = False) -> torch.Tensor:
    """What sentence-transformers computes: strip, tokenize (pad to longest, truncate), encode, pool, normalize."""
    texts = [t.strip().lower() if lower else t.strip() for t in texts]
    enc = tokenizer(texts, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    vectors = reference_pool(hidden, enc["attention_mask"], modes)
    return F.normalize(vectors, p=2, dim=1) if normalize else vectors
