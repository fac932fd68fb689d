"""Token ids for an encoder model: truncated to the model's length, never padded.

A ``tokenizer.json`` may carry padding and truncation settings of its own (all-MiniLM-L6-v2's pads
every text to 128 tokens and cuts at 128); transformers and sentence-transformers override them on
every call, and so must we. The packed batches of ``BertModel`` need no padding at all. We work on
private copies of the checkpoint's Rust tokenizer so the shared ``Tokenizer`` is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import tokenizers

from inference_pio.plugin import ConfigError
from inference_pio.tokenizer import Tokenizer


class TextEncoder:
    """``encode`` / ``encode_batch`` as transformers does with ``padding=False`` (and, for the batch,
    ``truncation=True, max_length=max_length``)."""

    def __init__(self, tokenizer: Tokenizer, max_length: int):
        rust = getattr(getattr(tokenizer, "_backend", None), "tok", None)
        if not isinstance(rust, tokenizers.Tokenizer):
            raise ConfigError(f"{tokenizer.folder}: an embedding model needs a tokenizer.json "
                              "(the fast tokenizer file transformers writes with save_pretrained)")
        serialized = rust.to_str()
        self.max_length = max_length
        self._plain = tokenizers.Tokenizer.from_str(serialized)
        self._plain.no_padding()
        self._plain.no_truncation()
        self._truncating = tokenizers.Tokenizer.from_str(serialized)
        self._truncating.no_padding()
        self._truncating.enable_truncation(max_length)

    def encode(self, text: str, add_special_tokens: bool = True, truncate: bool = False) -> list[int]:
        """Ids of one text, cut to ``max_length`` (special tokens kept) when ``truncate``."""
        encoder = self._truncating if truncate else self._plain
        return encoder.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text with special tokens, cut to ``max_length`` (Rust, in parallel)."""
        return [e.ids for e in self._truncating.encode_batch(list(texts))]
