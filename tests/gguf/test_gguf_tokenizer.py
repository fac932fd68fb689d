"""The tokenizer rebuilt from GGUF metadata gives transformers' ids for the same file."""

from __future__ import annotations

import pytest

from inference_pio.tokenizer import Tokenizer
from inference_pio.tokenizer.gguf import build_tokenizer

from .conftest import hf_tokenizer_from_gguf
from .writer import write_gguf

TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    " leading space,  two spaces and a\ttab",
    "Emoji: 😀 🎉 and 中文测试, Ünïcödé àccents.",
    "def f(x):\n    return x * 2  # code\n\n",
    "<|im_start|>user\nhi<|im_end|> <s> </s> <unk>",
    "",
]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def gguf_with_tokenizer(request, tiny_hf, gguf_folder):
    path = write_gguf(gguf_folder / f"tok-{request.param}.gguf", tiny_hf, tokenizer=request.param)
    return request.param, path


@pytest.mark.parametrize("text", TEXTS)
def test_ids_and_text_match_transformers(gguf_with_tokenizer, text):
    kind, path = gguf_with_tokenizer
    ours, theirs = Tokenizer.from_gguf(path), hf_tokenizer_from_gguf(path)
    ids = ours.encode(text)
    assert ids == theirs.encode(text)
    assert ours.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids, skip_special_tokens=False)
    if kind == "llama":  # SentencePiece files get BOS unless they say otherwise
        assert ids[:1] == [ours.bos_token_id]


def test_special_tokens_and_chat_template_follow_the_metadata(gguf_with_tokenizer):
    kind, path = gguf_with_tokenizer
    ours, theirs = Tokenizer.from_gguf(path), hf_tokenizer_from_gguf(path)
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id)
    assert ours.vocab_size == len(theirs)
    if kind == "gpt2":
        messages = [{"role": "user", "content": "What is 2+2?"}]
        expected = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
        assert ours.apply_chat_template(messages, tokenize=True) == expected


def test_unknown_tokenizer_model_is_named():
    with pytest.raises(ValueError, match="tokenizer.ggml.model 'rwkv' is not supported.*gpt2, llama"):
        build_tokenizer({"model": "rwkv", "tokens": ["a"]}, {}, "x.gguf")


def test_gguf_without_tokenizer_says_so(tiny_hf, gguf_folder):
    path = write_gguf(gguf_folder / "no-tokenizer.gguf", tiny_hf, tokenizer=None)
    with pytest.raises(ValueError, match="no-tokenizer.gguf: the GGUF metadata holds no tokenizer"):
        Tokenizer.from_gguf(path)
