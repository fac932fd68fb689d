"""The tokenizer a GGUF file describes in its metadata, built with the ``tokenizers`` library
(``Tokenizer.from_gguf`` calls :func:`read_gguf_tokenizer`; this module knows no ``Tokenizer``).

A GGUF has no tokenizer.json: llama.cpp stores the vocabulary (``tokenizer.ggml.tokens``), merges,
token types, special-token ids, the add-BOS flag and the chat template as metadata. We rebuild the
tokenizer transformers builds from the same file (``AutoTokenizer.from_pretrained(folder,
gguf_file=...)``, its ``integrations/gguf/gguf_tokenizer_mapping.py``), so both give the same ids
(tested), without importing transformers:

- ``gpt2`` (byte-level BPE): GPT-2's byte-level pre-tokenizer and decoder; the split regex follows
  ``tokenizer.ggml.pre`` where the vocabulary was trained on another one (Llama 3, Qwen2, ...).
- ``llama`` (SentencePiece BPE): "▁" word marker prepended to the first word, byte fallback; merges
  from the file, or derived from the token scores when the file has none.

Control tokens (type 3) and the named special tokens are matched whole and skipped when decoding;
user-defined tokens (type 4) are matched whole and kept.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightLoadError
from ..messages import shorten
from .backends import FastBackend

_CONTROL, _USER_DEFINED = 3, 4
_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                "pad_token": "padding_token_id"}

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
#: tokenizer.ggml.pre -> the split regex its merges were learned with (others: GPT-2's own regex).
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), _QWEN2_SPLIT),
    **dict.fromkeys(("gpt-4o", "llama4"), _GPT4O_SPLIT),
}


def read_gguf_tokenizer(source) -> tuple:
    """What ``Tokenizer(...)`` is built from, read from a GGUF file's metadata (``source``: a path or an
    opened ``GGUFFile``): ``(backend, path, tokenizer config, generation config, model config, chat template)``.

    Raises ``WeightLoadError`` (a ``ValueError``) naming the file and the key when it has no tokenizer,
    one of a kind not supported, or mistyped tokenizer metadata.
    """
    from ..weights.gguf_file import open_gguf

    gguf = open_gguf(source)
    path = gguf.path
    meta = {key.removeprefix("tokenizer.ggml."): value
            for key, value in gguf.metadata.items() if key.startswith("tokenizer.ggml.")}
    if not meta.get("tokens"):
        raise WeightLoadError(f"{path}: the GGUF metadata holds no tokenizer (tokenizer.ggml.tokens)")
    _check_metadata(path, meta, gguf.get("tokenizer.chat_template"))
    tokens = meta["tokens"]
    # Optional ids that are missing, not integers or outside the vocabulary: the token is absent.
    ids = {key: meta[key] for key in (*_SPECIAL_IDS.values(), "eot_token_id", "eom_token_id")
           if type(meta.get(key)) is int and 0 <= meta[key] < len(tokens)}
    special = {name: tokens[ids[key]] for name, key in _SPECIAL_IDS.items() if key in ids}
    try:
        backend = _GGUFBackend(build_tokenizer(meta, special, path))
    except WeightLoadError:
        raise
    except Exception as exc:  # the tokenizers library's own errors on a vocabulary it cannot take
        raise WeightLoadError(f"{path}: the tokenizer in tokenizer.ggml.* cannot be built: "
                              f"{shorten(str(exc), 200)}") from exc
    # llama.cpp stops on end-of-turn / end-of-message tokens as well as EOS.
    stop_ids = [ids[k] for k in ("eos_token_id", "eot_token_id", "eom_token_id") if k in ids]
    return (backend, path, special, {}, {"eos_token_id": stop_ids, "bos_token_id": ids.get("bos_token_id")},
            gguf.get("tokenizer.chat_template"))


# tokenizer.ggml.<key> -> (element type, what to call it): the arrays a tokenizer is built from.
_ARRAYS = {"tokens": (str, "strings"), "merges": (str, "strings"), "scores": (float, "floats"),
           "token_type": (int, "integers")}


def _check_metadata(path: Path, meta: dict, chat_template) -> None:
    """Refuse mistyped tokenizer metadata with a ``WeightLoadError`` naming the key, before the
    tokenizers library sees it."""
    for key, (kind, what) in _ARRAYS.items():
        values = meta.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not all(type(v) is kind for v in values):
            raise WeightLoadError(f"{path}: tokenizer.ggml.{key} must be an array of {what}, got "
                                  f"{_describe(values)}")
        if key in ("scores", "token_type") and len(values) != len(meta["tokens"]):
            raise WeightLoadError(f"{path}: tokenizer.ggml.{key} holds {len(values)} values for "
                                  f"{len(meta['tokens'])} tokens")
    for i, merge in enumerate(meta.get("merges") or []):
        left, space, right = merge.partition(" ")
        if not (left and space and right):
            raise WeightLoadError(f"{path}: tokenizer.ggml.merges[{i}] = {shorten(merge)} is not two tokens "
                                  "separated by a space")
    if chat_template is not None and not isinstance(chat_template, str):
        raise WeightLoadError(f"{path}: tokenizer.chat_template = {shorten(chat_template)}: must be a string")


def _describe(values) -> str:
    if not isinstance(values, list):
        return f"{type(values).__name__} {shorten(values)}"
    odd = next(v for v in values if type(v) is not type(values[0])) if len({type(v) for v in values}) > 1 else values[0]
    return f"an array holding {type(odd).__name__} {shorten(odd)}"


class _GGUFBackend(FastBackend):
    """The tokenizer.json backend's methods over a ``tokenizers.Tokenizer`` built in memory."""

    def __init__(self, tok):
        self.tok = tok


def build_tokenizer(meta: dict, special: dict[str, str], path: Path | str = "GGUF"):
    """A ``tokenizers.Tokenizer`` from ``tokenizer.ggml.*`` metadata (keys without that prefix) and the
    named special tokens (``{"bos_token": "<s>", ...}``)."""
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors

    kind = meta.get("model")
    if kind == "gpt2":
        tok, spelled = _byte_level(meta), set(_bytes_to_unicode().values())
    elif kind == "llama":
        tok, spelled = _sentencepiece(meta), None
    else:
        raise WeightLoadError(f"{path}: tokenizer.ggml.model {shorten(kind)} is not supported (supported: gpt2, llama)")
    tokens, types = meta["tokens"], meta.get("token_type") or []
    # A control token spelled outside the byte alphabet is a llama.cpp mislabel in a byte-level vocabulary.
    control = [t for t, ty in zip(tokens, types) if ty == _CONTROL and (spelled is None or set(t) <= spelled)]
    named = [t for t in special.values() if t not in control]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control + named])
    vocab = tok.get_vocab()
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab])
    split = PRE_TOKENIZER_SPLITS.get(meta.get("pre")) if kind == "gpt2" else None
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel() if kind == "gpt2" else decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    # SentencePiece files that do not say otherwise get BOS, as in llama.cpp and transformers.
    add_bos = bool(meta.get("add_bos_token", kind == "llama")) and "bos_token" in special
    add_eos = bool(meta.get("add_eos_token", False)) and "eos_token" in special
    bos, eos = special.get("bos_token"), special.get("eos_token")
    single = " ".join([f"{bos}:0"] * add_bos + ["$A:0"] + [f"{eos}:0"] * add_eos)
    pair = " ".join([single] + [f"{bos}:1"] * add_bos + ["$B:1"] + [f"{eos}:1"] * add_eos)
    # Only the tokens added are looked up: a file without BOS or EOS has None there.
    specials = [(t, tok.token_to_id(t)) for t, added in ((bos, add_bos), (eos, add_eos)) if added]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    return tok


def _byte_level(meta: dict):
    from tokenizers import Tokenizer as RustTokenizer, models, pre_tokenizers

    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(meta["tokens"])}
    tok = RustTokenizer(models.BPE(vocab=vocab, merges=_merges(meta, vocab), dropout=None, continuing_subword_prefix="",
                                   end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tok


def _sentencepiece(meta: dict):
    from tokenizers import Tokenizer as RustTokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(meta["tokens"])}
    tok = RustTokenizer(models.BPE(vocab=vocab, merges=_merges(meta, vocab), fuse_unk=True, byte_fallback=True,
                                   dropout=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return tok


def _merges(meta: dict, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """The file's merges, or (SentencePiece files have none) every split of a token into two tokens,
    best score first, like transformers' ``generate_merges``."""
    if meta.get("merges"):
        return [tuple(m.split(" ", 1)) for m in meta["merges"]]
    scores = dict(zip(meta["tokens"], meta.get("scores") or []))
    candidates = []
    for token, score in scores.items():
        pairs = [(token[:k], token[k:], score) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        candidates += sorted(pairs, key=lambda p: (vocab[p[0]], vocab[p[1]]))
    candidates.sort(key=lambda p: (p[2], len(p[0]), len(p[1])), reverse=True)
    return [(left, right) for left, right, _ in candidates]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table of byte-level vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table
