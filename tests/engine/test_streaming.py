"""IncrementalDetokenizer on byte-level BPE and SentencePiece-style tokenizers, multi-byte text."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_pio.engine import IncrementalDetokenizer, SamplingParams, Sequence

from .tiny_tokenizers import byte_level_bpe, sentencepiece_bpe

TEXTS = [
    "Hello world! Streaming text.",
    "Emoji 😀🎉 then 👍🏽 and ❤️, flag 🇫🇷.",
    "中文测试：你好，世界。",
    "mixed: café 日本語 🙂 end",
    "  leading and   repeated spaces ",
]


class Decoder:
    """Adapts a raw ``tokenizers.Tokenizer`` to the decode signature the detokenizer expects."""

    def __init__(self, tok):
        self.tok = tok

    def decode(self, ids, skip_special_tokens=True):
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids


_BYTE_LEVEL = Decoder(byte_level_bpe())
_SENTENCEPIECE = Decoder(sentencepiece_bpe())


@pytest.fixture(params=["byte_level", "sentencepiece"])
def tok(request):
    return _BYTE_LEVEL if request.param == "byte_level" else _SENTENCEPIECE


def stream(tok, ids, prompt_ids=()) -> list[str]:
    d = IncrementalDetokenizer(tok, prompt_ids)
    pieces = [d.add(t) for t in ids]
    return pieces + [d.flush()]


def test_tokenizers_really_split_characters(tok):
    # Without this the UTF-8 tests below would prove nothing.
    ids = tok.encode("😀 你好")
    assert any("\ufffd" in tok.decode([t]) for t in ids)


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_rebuild_the_full_decode_without_broken_characters(tok, text):
    ids = tok.encode(text)
    pieces = stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[-1] == ""  # every character was complete before the flush


@pytest.mark.parametrize("text", TEXTS)
def test_prompt_context_keeps_leading_spaces(tok, text):
    prompt = tok.encode("Say:")
    ids = tok.encode(" " + text)
    full = tok.decode(prompt + ids)
    assert "".join(stream(tok, ids, prompt)) == full[len(tok.decode(prompt)) :]


def test_single_token_decoding_would_lose_spaces():
    tok = Decoder(sentencepiece_bpe())
    ids = tok.encode("Hello world")
    assert "".join(tok.decode([t]) for t in ids) != tok.decode(ids)  # the problem the offsets solve
    assert "".join(stream(tok, ids)) == "Hello world"


def test_flush_emits_an_incomplete_character_like_a_full_decode(tok):
    ids = tok.encode("ok 😀")
    cut = next(i for i in range(len(ids), 0, -1) if tok.decode(ids[:i]).endswith("\ufffd"))
    d = IncrementalDetokenizer(tok)
    emitted = "".join(d.add(t) for t in ids[:cut])
    assert "\ufffd" not in emitted
    assert emitted + d.flush() == tok.decode(ids[:cut])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "é", "你", "😀", "👍🏽", "\n", "the", "🇫🇷"]), max_size=20))
def test_random_multibyte_text_round_trips(text_parts):
    for tok in (_BYTE_LEVEL, _SENTENCEPIECE):
        ids = tok.encode("".join(text_parts))
        pieces = stream(tok, ids)
        assert "".join(pieces) == tok.decode(ids)
        assert not any("\ufffd" in p for p in pieces)


def test_sequence_streams_and_stops_on_a_stop_string():
    tok = _BYTE_LEVEL
    prompt = tok.encode("Q: ")
    answer = tok.encode("你好 world 😀 END more text")
    seq = Sequence("r1", prompt, SamplingParams(max_tokens=100, stop=["END"], repetition_penalty=1.1), tok)
    pieces = []
    for t in answer:
        pieces.append(seq.append_token(t))
        if seq.is_finished:
            break
    assert seq.output_text == "".join(pieces) == "你好 world 😀 "
    assert (seq.finish_reason, seq.stop_reason) == ("stop", "END")
    assert torch.equal(seq.seen_token_ids(), torch.tensor(prompt + seq.output_token_ids))
    with pytest.raises(RuntimeError, match="already finished"):
        seq.append_token(answer[0])


def test_sequence_length_finish_flushes_and_seeds_a_generator():
    tok = _BYTE_LEVEL
    ids = tok.encode("ab 😀")
    seq = Sequence(0, [1], SamplingParams(max_tokens=len(ids) - 1, seed=5), tok, eos_token_ids=[0])
    for t in ids[:-1]:
        seq.append_token(t)
    assert seq.finish_reason == "length" and seq.output_text == tok.decode(ids[:-1])
    assert seq.generator is not None and seq.generator.initial_seed() == 5
    assert seq.seen_token_ids() is None  # no penalty: no buffer kept
