"""The model's vocabulary as xgrammar sees it (``tokenizer_info``), and the UTF-8 byte rules that
compact JSON output must keep; loads xgrammar, an optional dependency (the ``grammar`` extra)."""

from __future__ import annotations

from ..extras import require


def load_xgrammar():
    """The xgrammar module; ``MissingExtraError`` (an ``ImportError``) naming the ``grammar`` extra without it."""
    [xgrammar] = require("grammar", "constrained JSON generation (response_format, tools, schematic generation)",
                         ("xgrammar",))
    return xgrammar


def _vocab_type(xgr, tokens: list[str]):
    """Byte encoding of the vocabulary, judged from the vocabulary itself (as xgrammar does for HF tokenizers)."""
    from tokenizers.pre_tokenizers import ByteLevel

    present = set(tokens)
    if sum(f"<0x{b:02X}>" in present for b in range(256)) >= 128:
        return xgr.VocabType.BYTE_FALLBACK
    alphabet = set(ByteLevel.alphabet())
    if sum(c in present for c in alphabet) >= 128:
        nonempty = [t for t in tokens if t]
        if sum(all(c in alphabet for c in t) for t in nonempty) >= 0.99 * len(nonempty):
            return xgr.VocabType.BYTE_LEVEL
    return xgr.VocabType.RAW


# Lead bytes whose second byte is restricted in UTF-8 (overlongs, surrogates, > U+10FFFF): the bad ranges.
BAD_SECOND = {0xE0: range(0x80, 0xA0), 0xED: range(0xA0, 0xC0), 0xF0: range(0x80, 0x90), 0xF4: range(0x90, 0xC0)}


def _clean_bytes(piece: bytes) -> bool:
    """No control byte, no byte that never occurs in UTF-8, no forbidden (lead, second byte) pair."""
    if any(b < 0x20 or b in (0xC0, 0xC1) or b >= 0xF5 for b in piece):
        return False
    return not any(piece[i + 1] in BAD_SECOND.get(piece[i], ()) for i in range(len(piece) - 1))


def tokenizer_info(tokenizer, vocab_size: int):
    """xgrammar ``TokenizerInfo`` for our :class:`inference_pio.tokenizer.Tokenizer` and a model vocabulary
    of ``vocab_size`` logits, for compact JSON grammars: ids the tokenizer lacks, special tokens and tokens
    holding control bytes are never allowed."""
    xgr = load_xgrammar()
    size = min(tokenizer.vocab_size, vocab_size)
    tokens = [tokenizer.id_to_token(i) or "" for i in range(size)]
    for i, token in enumerate(tokens):
        # A special token vanishes from skip_special_tokens text: the grammar must never count on it.
        if token and not tokenizer.decode([i], skip_special_tokens=True) \
                and tokenizer.decode([i], skip_special_tokens=False):
            tokens[i] = ""
    vocab_type = _vocab_type(xgr, tokens)
    first = tokenizer.encode("a", add_special_tokens=False)
    first_piece = tokenizer.id_to_token(first[0]) if first else ""
    stop = [t for t in tokenizer.eos_token_ids if t < vocab_size]
    if not stop:
        raise ValueError("constrained generation needs an end-of-sequence token, and this tokenizer names none "
                         "(eos_token in tokenizer_config.json or eos_token_id in config.json)")
    prefix_space = bool(first_piece) and first_piece[0] in "▁Ġ"
    info = xgr.TokenizerInfo(tokens, vocab_type, vocab_size=vocab_size, stop_token_ids=stop,
                             add_prefix_space=prefix_space)
    # Compact JSON never needs a raw control byte (escapes are plain characters), yet xgrammar's string
    # rule admits some (\x12 inside a string); nor bytes that are invalid UTF-8, which xgrammar's code-point
    # ranges also admit (UTF-8-encoded surrogates: detokenizing turns them into several U+FFFD, breaking
    # maxLength). Drop the tokens that carry either; pairs split across tokens are masked per step.
    bad = [i for i, piece in enumerate(info.decoded_vocab[:size]) if tokens[i] and not _clean_bytes(piece)]
    if not bad:
        return info
    for i in bad:
        tokens[i] = ""
    return xgr.TokenizerInfo(tokens, vocab_type, vocab_size=vocab_size, stop_token_ids=stop,
                             add_prefix_space=prefix_space)
