"""The :class:`Tokenizer` of one checkpoint: encode, decode, special-token ids and the chat template.

Special tokens: ``bos``/``eos``/``pad``/``unk`` token strings come from ``tokenizer_config.json``;
``eos_token_ids`` also collects ``eos_token_id`` from ``generation_config.json`` and ``config.json``
(an int or a list there), since generation must stop on any of them (Llama 3 lists three).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .backends import FastBackend, TransformersBackend
from .chat_template import compile_chat_template
from .files import OTHER_TOKENIZER_FILES, SPECIAL_NAMES, find_chat_template, id_list, read_json, token_content
from .gguf import read_gguf_tokenizer


class Tokenizer:
    """Encode/decode plus special tokens and chat template of one checkpoint."""

    def __init__(self, backend, folder: Path, config: Mapping[str, Any], generation_config: Mapping[str, Any],
                 model_config: Mapping[str, Any], chat_template: str | None):
        self._backend = backend
        self.folder = folder
        self.chat_template = chat_template
        self._compiled_template = None
        self.special_tokens: dict[str, str] = {
            name: tok for name in SPECIAL_NAMES if (tok := token_content(config.get(name))) is not None
        }

        def first_id(name: str) -> int | None:
            # The tokenizer's own token wins; otherwise generation_config.json, then config.json.
            tid = self._special_id(name)
            if tid is None:
                tid = next(iter(id_list(generation_config.get(name + "_id")) + id_list(model_config.get(name + "_id"))), None)
            return tid

        self.bos_token_id = first_id("bos_token")
        self.pad_token_id = first_id("pad_token")
        eos = [self._special_id("eos_token")] + id_list(generation_config.get("eos_token_id"))
        eos += id_list(model_config.get("eos_token_id"))
        # Ordered union: the tokenizer's own EOS first (the one chat templates write).
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(i for i in eos if i is not None))

    def _special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self._backend.token_to_id(token)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Tokenizer":
        """Loads the tokenizer of a local checkpoint folder (no network access)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder {folder} does not exist or is not a directory")
        config = read_json(folder / "tokenizer_config.json")
        generation_config = read_json(folder / "generation_config.json")
        model_config = read_json(folder / "config.json")
        special = {n: t for n in SPECIAL_NAMES if (t := token_content(config.get(n))) is not None}
        if (folder / "tokenizer.json").is_file():
            backend = FastBackend(folder / "tokenizer.json", special)
        elif any((folder / name).is_file() for name in OTHER_TOKENIZER_FILES):
            backend = TransformersBackend(folder)
        else:
            raise FileNotFoundError(
                f"no tokenizer in {folder}: expected tokenizer.json (or one of {', '.join(OTHER_TOKENIZER_FILES)})"
            )
        return cls(backend, folder, config, generation_config, model_config, find_chat_template(folder, config))

    @classmethod
    def from_gguf(cls, source) -> "Tokenizer":
        """The tokenizer a GGUF file describes in its metadata (``source``: path or opened ``GGUFFile``);
        see ``inference_pio.tokenizer.gguf``. Raises ``WeightLoadError`` (a ``ValueError``) naming the file
        and the key when it has no tokenizer, one of a kind not supported, or mistyped tokenizer metadata."""
        return cls(*read_gguf_tokenizer(source))

    # ----- encode / decode -----

    @property
    def vocab_size(self) -> int:
        """Vocabulary size including added tokens."""
        return self._backend.vocab_size

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_token_ids[0] if self.eos_token_ids else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(ids, skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    # ----- chat template -----

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **kwargs: Any,
    ) -> str | list[int]:
        """Renders ``messages`` ([{"role": ..., "content": ...}, ...]) with the checkpoint's chat template.

        Extra keyword arguments (``tools``, ``documents``, template switches such as
        ``enable_thinking``) reach the template as variables, as in transformers. With ``tokenize=True``
        the ids are returned, encoded without adding special tokens again (the template writes them).
        """
        if self.chat_template is None:
            raise ValueError(
                f"the tokenizer in {self.folder} has no chat template (looked for chat_template.jinja, "
                "chat_template.json and 'chat_template' in tokenizer_config.json)"
            )
        if self._compiled_template is None:
            self._compiled_template = compile_chat_template(self.chat_template)
        if not isinstance(messages, Sequence) or any(not isinstance(m, Mapping) for m in messages):
            raise TypeError("messages must be a list of dicts with 'role' and 'content'")
        variables = {**self.special_tokens, "tools": None, "documents": None, **kwargs}
        text = self._compiled_template.render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **variables
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text
