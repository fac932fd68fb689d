"""The libraries that encode and decode: ``tokenizers`` over a tokenizer.json (or a vocabulary built
in memory from a GGUF file), transformers' AutoTokenizer for folders without one. Both give the
:class:`~inference_pio.tokenizer.Tokenizer` the same small interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


class FastBackend:
    """``tokenizers.Tokenizer`` from tokenizer.json.

    BOS/EOS insertion is whatever the file's post-processor does: transformers' generic backend
    (5.x) does the same and ignores ``add_bos_token`` / ``add_eos_token`` in tokenizer_config.json.
    """

    def __init__(self, path: Path, special: Mapping[str, str]):
        import tokenizers

        try:
            self.tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust error says what is wrong with the file
            raise ValueError(f"cannot load {path}: {e}") from None
        # A tokenizer.json may carry padding/truncation settings (sentence encoders do); transformers
        # ignores them unless asked per call, and so do we: encode returns exactly the text's ids.
        self.tok.no_padding()
        self.tok.no_truncation()
        missing = [t for t in special.values() if self.tok.token_to_id(t) is None]
        if missing:
            # transformers adds special tokens named in the config but absent from the vocabulary.
            self.tok.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in missing])

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tok.id_to_token(token_id)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)


class TransformersBackend:
    """transformers' AutoTokenizer, for folders without tokenizer.json."""

    def __init__(self, folder: Path):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ImportError(
                f"{folder} has no tokenizer.json; loading its other tokenizer files needs transformers "
                "(pip install transformers sentencepiece)"
            ) from None
        self.tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        tid = self.tok.convert_tokens_to_ids(token)
        return None if tid is None or tid == self.tok.unk_token_id and token != self.tok.unk_token else tid

    def id_to_token(self, token_id: int) -> str | None:
        return self.tok.convert_ids_to_tokens(token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.tok)
