"""Tokenizer of a checkpoint folder: encode, decode, special-token ids and the chat template.

``Tokenizer.from_pretrained(folder)`` loads ``tokenizer.json`` with the Rust ``tokenizers`` library (fast,
no transformers import). Only when that file is absent and other tokenizer files exist (a SentencePiece
``tokenizer.model``, ``vocab.json`` + ``merges.txt``, ...) does it fall back to transformers'
``AutoTokenizer`` with local files only. Encoding, decoding and chat-template rendering follow
transformers (the tests compare against ``PreTrainedTokenizerFast`` on the same folder).

Special tokens: ``bos``/``eos``/``pad``/``unk`` token strings come from ``tokenizer_config.json``;
``eos_token_ids`` also collects ``eos_token_id`` from ``generation_config.json`` and ``config.json``
(an int or a list there), since generation must stop on any of them (Llama 3 lists three).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

# Files besides tokenizer.json from which transformers can build a tokenizer.
_OTHER_TOKENIZER_FILES = (
    "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt", "merges.txt",
    "tiktoken.model",
)
_SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{path} is JSON nested too deeply to be a tokenizer file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _token_content(value: Any) -> str | None:
    """A special token in tokenizer_config.json is a string or a serialized AddedToken dict."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise ValueError(f"a token id must be an int or a list of ints, got {value!r}")


class _FastBackend:
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


class _TransformersBackend:
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


class Tokenizer:
    """Encode/decode plus special tokens and chat template of one checkpoint."""

    def __init__(self, backend, folder: Path, config: Mapping[str, Any], generation_config: Mapping[str, Any],
                 model_config: Mapping[str, Any], chat_template: str | None):
        self._backend = backend
        self.folder = folder
        self.chat_template = chat_template
        self._compiled_template = None
        self.special_tokens: dict[str, str] = {
            name: tok for name in _SPECIAL_NAMES if (tok := _token_content(config.get(name))) is not None
        }

        def first_id(name: str) -> int | None:
            # The tokenizer's own token wins; otherwise generation_config.json, then config.json.
            tid = self._special_id(name)
            if tid is None:
                tid = next(iter(_id_list(generation_config.get(name + "_id")) + _id_list(model_config.get(name + "_id"))), None)
            return tid

        self.bos_token_id = first_id("bos_token")
        self.pad_token_id = first_id("pad_token")
        eos = [self._special_id("eos_token")] + _id_list(generation_config.get("eos_token_id"))
        eos += _id_list(model_config.get("eos_token_id"))
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
        config = _read_json(folder / "tokenizer_config.json")
        generation_config = _read_json(folder / "generation_config.json")
        model_config = _read_json(folder / "config.json")
        special = {n: t for n in _SPECIAL_NAMES if (t := _token_content(config.get(n))) is not None}
        if (folder / "tokenizer.json").is_file():
            backend = _FastBackend(folder / "tokenizer.json", special)
        elif any((folder / name).is_file() for name in _OTHER_TOKENIZER_FILES):
            backend = _TransformersBackend(folder)
        else:
            raise FileNotFoundError(
                f"no tokenizer in {folder}: expected tokenizer.json (or one of {', '.join(_OTHER_TOKENIZER_FILES)})"
            )
        return cls(backend, folder, config, generation_config, model_config, _find_chat_template(folder, config))

    @classmethod
    def from_gguf(cls, source) -> "Tokenizer":
        """The tokenizer a GGUF file describes in its metadata (``source``: path or opened ``GGUFFile``);
        see ``inference_pio.tokenizer_gguf``."""
        from .tokenizer_gguf import tokenizer_from_gguf

        return tokenizer_from_gguf(source)

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


def _find_chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    """The default template: chat_template.jinja, then chat_template.json, then tokenizer_config.json."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = _read_json(folder / "chat_template.json").get("chat_template", config.get("chat_template"))
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]: the one named "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def compile_chat_template(source: str):
    """Compiles a chat template in a sandbox configured like transformers'.

    Chat templates come from downloaded checkpoints: untrusted code, hence the immutable sandbox,
    the underscore ban on namespaces, and no filters beyond Jinja's own plus ``tojson``.
    """
    try:
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError("apply_chat_template needs jinja2 (pip install jinja2)") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters, which chat templates do not expect.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateNamespace(jinja2.utils.Namespace):
        # Underscore attributes could reach interpreter internals through a namespace.
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set attribute {name!r} on a namespace")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = TemplateNamespace
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"chat template has a syntax error at line {e.lineno}: {e.message}") from None
