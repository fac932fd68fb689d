"""Hostile GGUF files for the loader tests: a tiny valid base file, re-encoded with one attack each.

The base is written by the gguf package's ``GGUFWriter`` (a 2-layer Llama, F32 / Q8_0 / Q4_0 / Q4_1
tensors, the byte-level BPE test tokenizer), read back field by field with ``GGUFReader`` into a
``Spec`` (metadata with their value types, tensors with their bytes) and re-encoded by ``Spec.encode``,
which can write what no writer would: duplicate keys, lying counts, misplaced offsets. Each attack in
``ATTACKS`` returns the file's bytes and what loading it must give: ``WeightLoadError`` or
``ConfigError`` with a message matching a pattern, or a clean load (``LOADS``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# gguf.GGUFValueType ids
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FORMATS = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q",
            F64: "d"}
# ggml types
GGML_F32, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0 = 0, 2, 3, 8

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS, VOCAB = 64, 4, 2, 128, 2, 400
WEIGHTS, CONFIG, LOADS = "WeightLoadError", "ConfigError", "loads"


@dataclass
class Field:
    key: str
    vtype: int
    value: object
    etype: int | None = None  # element type of an array


@dataclass
class Tensor:
    name: str
    dims: list[int]  # ggml order: innermost first
    ggml_type: int
    data: bytes
    offset: int | None = None  # None: where the encoder lays it out


@dataclass
class Spec:
    fields: list[Field]
    tensors: list[Tensor]
    version: int = 3
    alignment: int = 32
    #: byte positions recorded by the last ``encode``: "kv:<key>", "kv:<key>:value", "tensor:<name>", "data"...
    marks: dict[str, int] = field(default_factory=dict)

    def get(self, key: str) -> Field:
        return next(f for f in self.fields if f.key == key)

    def set(self, key: str, vtype: int, value, etype: int | None = None) -> "Spec":
        """A copy with ``key`` set (replaced in place, or appended)."""
        fields = [f for f in self.fields if f.key != key]
        index = next((i for i, f in enumerate(self.fields) if f.key == key), len(fields))
        fields.insert(index, Field(key, vtype, value, etype))
        return replace(self, fields=fields, marks={})

    def drop(self, key: str) -> "Spec":
        return replace(self, fields=[f for f in self.fields if f.key != key], marks={})

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)

    def with_tensor(self, name: str, **changes) -> "Spec":
        return replace(self, tensors=[replace(t, **changes) if t.name == name else t for t in self.tensors], marks={})

    def encode(self) -> bytes:
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors), len(self.fields))
        self.marks = {"counts": 8, "kvs": len(out)}
        for f in self.fields:
            self.marks[f"kv:{f.key}"] = len(out)
            out += _string(f.key)
            out += struct.pack("<I", f.vtype)
            self.marks[f"kv:{f.key}:value"] = len(out)
            out += _value(f.vtype, f.value, f.etype)
        self.marks["tensor_infos"] = len(out)
        offsets, at = [], 0
        for t in self.tensors:
            offsets.append(at)
            at = _align(at + len(t.data), self.alignment)
        for t, laid_out in zip(self.tensors, offsets):
            self.marks[f"tensor:{t.name}"] = len(out)
            out += _string(t.name) + struct.pack("<I", len(t.dims)) + struct.pack(f"<{len(t.dims)}Q", *t.dims)
            out += struct.pack("<IQ", t.ggml_type, laid_out if t.offset is None else t.offset)
        data_start = _align(len(out), self.alignment)
        self.marks["data"] = data_start
        for t, laid_out in zip(self.tensors, offsets):  # each tensor's bytes where its table entry says
            at = data_start + (laid_out if t.offset is None or t.offset > 1 << 32 else t.offset)
            out += bytes(max(0, at + len(t.data) - len(out)))
            out[at:at + len(t.data)] = t.data
        return bytes(out)


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value, etype: int | None) -> bytes:
    if vtype == STRING:
        return _string(value)
    if vtype == ARRAY:
        return struct.pack("<IQ", etype, len(value)) + b"".join(_value(etype, v, U32 if etype == ARRAY else None) for v in value)
    return struct.pack("<" + _FORMATS[vtype], value)


def write_base(path: Path) -> Path:
    """The valid base file: a tied 2-layer Llama with the byte-level BPE test tokenizer."""
    import gguf
    from gguf.quants import quantize

    from .writer import _add_tokenizer

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("hostile-base")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB)
    _add_tokenizer(writer, "gpt2")

    def matrix(name: str, rows: int, cols: int, kind: int) -> None:
        values = rng.standard_normal((rows, cols)).astype(np.float32) * 0.1
        if kind == GGML_F32:
            writer.add_tensor(name, values)
        else:
            qtype = gguf.GGMLQuantizationType(kind)
            writer.add_tensor(name, quantize(values, qtype), raw_dtype=qtype)

    matrix("token_embd.weight", VOCAB, HIDDEN, GGML_F32)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    kv = HIDDEN // HEADS * KV_HEADS
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        matrix(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN, GGML_Q8_0)
        matrix(f"blk.{i}.attn_k.weight", kv, HIDDEN, GGML_Q8_0)
        matrix(f"blk.{i}.attn_v.weight", kv, HIDDEN, GGML_Q8_0)
        matrix(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN, GGML_Q4_0)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
        matrix(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN, GGML_Q4_0)
        matrix(f"blk.{i}.ffn_up.weight", FFN, HIDDEN, GGML_Q4_0)
        matrix(f"blk.{i}.ffn_down.weight", HIDDEN, FFN, GGML_Q4_1)  # the last tensor is Q4_1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_spec(path: Path) -> Spec:
    """The file at ``path`` as a ``Spec`` (through the gguf package's own reader)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields = []
    for f in reader.fields.values():
        if f.name.startswith("GGUF."):
            continue
        vtype = int(f.types[0])
        etype = int(f.types[1]) if vtype == ARRAY else None
        value = f.contents()
        fields.append(Field(f.name, vtype, value, etype))
    alignment = next((f.value for f in fields if f.key == "general.alignment"), 32)
    tensors = [Tensor(t.name, [int(d) for d in t.shape], int(t.tensor_type), bytes(np.asarray(t.data).view(np.uint8)))
               for t in reader.tensors]
    return Spec(fields, tensors, alignment=alignment)


# ----- the attacks: name -> (spec -> (bytes, expected kind, message pattern)) -----

Attack = Callable[[Spec], tuple[bytes, str, str]]
ATTACKS: dict[str, Attack] = {}
LAST = f"blk.{LAYERS - 1}.ffn_down.weight"
MIDDLE = "blk.0.ffn_down.weight"


def attack(name: str, kind: str, pattern: str):
    def register(make: Callable[[Spec], Spec | bytes]) -> Callable:
        def run(spec: Spec) -> tuple[bytes, str, str]:
            made = make(spec)
            return (made if isinstance(made, bytes) else made.encode()), kind, pattern
        assert name not in ATTACKS, name
        ATTACKS[name] = run
        return make
    return register


def _patch(spec: Spec, mark: str, fmt: str, value, delta: int = 0) -> bytes:
    data = bytearray(spec.encode())
    struct.pack_into("<" + fmt, data, spec.marks[mark] + delta, value)
    return bytes(data)


def truncations(spec: Spec) -> dict[str, bytes]:
    """The file cut inside every section: the fixed header, each metadata entry's key and value,
    each tensor info, and the tensor data."""
    full = spec.encode()
    m, cuts = spec.marks, {"magic": 2, "version": 6, "counts": 15}
    for f in spec.fields:
        cuts[f"key {f.key}"] = m[f"kv:{f.key}"] + 5
        cuts[f"value {f.key}"] = m[f"kv:{f.key}:value"] + 1
    for t in spec.tensors:
        cuts[f"info {t.name}"] = m[f"tensor:{t.name}"] + 10
    cuts["data start"] = m["data"] + 1
    cuts["data middle"] = (m["data"] + len(full)) // 2
    cuts["last byte"] = len(full) - 1
    return {where: full[:cut] for where, cut in cuts.items()}


@attack("bad magic", WEIGHTS, r"not a GGUF file")
def _(spec):
    return b"GGUG" + spec.encode()[4:]


@attack("version 1", WEIGHTS, r"GGUF version 1 is not supported")
def _(spec):
    return replace(spec, version=1)


@attack("big-endian version", WEIGHTS, r"GGUF version 50331648 is not supported")
def _(spec):
    return replace(spec, version=3 << 24)


@attack("huge tensor count", WEIGHTS, r"tensor count \d+ .* runs past the end")
def _(spec):
    return _patch(spec, "counts", "Q", 1 << 62)


@attack("huge metadata count", WEIGHTS, r"metadata count \d+ .* runs past the end")
def _(spec):
    return _patch(spec, "counts", "Q", (1 << 64) - 1, 8)


@attack("huge key length", WEIGHTS, r"string length \d+ .* runs past the end")
def _(spec):
    return _patch(spec, "kv:general.architecture", "Q", 1 << 60)


@attack("huge string value length", WEIGHTS, r"string length \d+ .* runs past the end")
def _(spec):
    return _patch(spec, "kv:general.architecture:value", "Q", 1 << 40)


@attack("huge array length", WEIGHTS, r"'tokenizer.ggml.tokens' array length \d+ .* runs past the end")
def _(spec):
    return _patch(spec, "kv:tokenizer.ggml.tokens:value", "Q", 1 << 59, 4)


@attack("unknown metadata value type", WEIGHTS, r"'general.name' has unknown value type 99")
def _(spec):
    return _patch(spec, "kv:general.name:value", "I", 99, -4)


@attack("unknown array element type", WEIGHTS, r"'tokenizer.ggml.merges' has unknown value type 77")
def _(spec):
    return _patch(spec, "kv:tokenizer.ggml.merges:value", "I", 77)


@attack("array of arrays", WEIGHTS, r"'tokenizer.ggml.token_type' is an array of arrays")
def _(spec):
    return spec.set("tokenizer.ggml.token_type", ARRAY, [[1]], ARRAY)


@attack("duplicate key", WEIGHTS, r"metadata key 'llama.block_count' appears twice")
def _(spec):
    return replace(spec, fields=spec.fields + [Field("llama.block_count", U32, 2)])


@attack("duplicate tensor name", WEIGHTS, r"tensor 'blk.0.attn_q.weight' appears twice")
def _(spec):
    tensors = list(spec.tensors)
    tensors[tensors.index(spec.tensor("blk.0.attn_k.weight"))] = replace(spec.tensor("blk.0.attn_q.weight"))
    return replace(spec, tensors=tensors)


@attack("n_dims 0", WEIGHTS, r"'output_norm.weight' has 0 dimensions")
def _(spec):
    return _patch(spec, "tensor:output_norm.weight", "I", 0, 8 + len("output_norm.weight"))


@attack("n_dims 5", WEIGHTS, r"has 5 dimensions \(1 to 4")
def _(spec):
    return spec.with_tensor("output_norm.weight", dims=[HIDDEN, 1, 1, 1, 1])


@attack("n_dims 2^32-1", WEIGHTS, r"has 4294967295 dimensions")
def _(spec):
    return _patch(spec, "tensor:output_norm.weight", "I", (1 << 32) - 1, 8 + len("output_norm.weight"))


@attack("unknown tensor type", WEIGHTS, r"'output_norm.weight' has unknown ggml type 99")
def _(spec):
    return spec.with_tensor("output_norm.weight", ggml_type=99)


@attack("dimension of 0", WEIGHTS, r"'output_norm.weight' has shape \[0\]: a dimension is 0")
def _(spec):
    return spec.with_tensor("output_norm.weight", dims=[0])


@attack("dimension product wraps uint64", WEIGHTS, r"'token_embd.weight' ends at byte \d{19,} but the file")
def _(spec):  # 64 * (400 + 2^58) wraps to 64 * 400 in uint64: the bytes of the real tensor
    return spec.with_tensor("token_embd.weight", dims=[HIDDEN, VOCAB + (1 << 58)])


@attack("dimension past int64", WEIGHTS, r"a dimension is 0 or past 2\^63")
def _(spec):
    return spec.with_tensor("output_norm.weight", dims=[(1 << 64) - HIDDEN])


@attack("rows not a block multiple", WEIGHTS, r"does not fit 32-element blocks")
def _(spec):
    return spec.with_tensor("blk.0.attn_q.weight", dims=[HIDDEN - 1, HIDDEN])


@attack("tensor past end of file", WEIGHTS, r"'token_embd.weight' ends at byte \d+ but the file has \d+ bytes")
def _(spec):
    return spec.with_tensor("token_embd.weight", offset=1 << 40)


@attack("misaligned offset", WEIGHTS, r"'output_norm.weight' .* starts at byte \d+, expected \d+")
def _(spec):  # 4 bytes past where it belongs: inside the alignment padding
    return spec.with_tensor("output_norm.weight", offset=_align(len(spec.tensor("token_embd.weight").data), 32) + 4)


@attack("overlapping tensors", WEIGHTS, r"'output_norm.weight' .* overlaps the tensor before it")
def _(spec):
    return spec.with_tensor("output_norm.weight", offset=0)


@attack("gap between tensors", WEIGHTS, r"'blk.0.attn_norm.weight' .* leaves a gap")
def _(spec):
    tensors, at = [], 0
    for t in spec.tensors:  # every tensor after output_norm moved 64 aligned units along: a gap
        tensors.append(replace(t, offset=at))
        at = _align(at + len(t.data), 32) + (64 * 32 if t.name == "output_norm.weight" else 0)
    return replace(spec, tensors=tensors)


@attack("alignment not a power of two", WEIGHTS, r"general.alignment is 48: it must be a power of two")
def _(spec):
    return spec.set("general.alignment", U32, 48)


@attack("alignment 0", WEIGHTS, r"general.alignment is 0: it must be a power of two")
def _(spec):
    return spec.set("general.alignment", U32, 0)


@attack("alignment a string", WEIGHTS, r"general.alignment is '32': it must be a power of two")
def _(spec):
    return spec.set("general.alignment", STRING, "32")


@attack("Q4_1 bytes relabelled Q4_0 (middle)", WEIGHTS, r"'blk.1.attn_norm.weight' .* leaves a gap")
def _(spec):
    return spec.with_tensor(MIDDLE, ggml_type=GGML_Q4_0)


@attack("Q4_1 bytes relabelled Q4_0 (last)", WEIGHTS, rf"bytes follow the tensor data after tensor '{LAST}' \(Q4_0\)")
def _(spec):
    return spec.with_tensor(LAST, ggml_type=GGML_Q4_0)


@attack("Q4_0 bytes relabelled Q4_1 (last)", WEIGHTS, rf"'{LAST}' ends at byte \d+ but the file")
def _(spec):
    q40 = spec.tensor("blk.1.ffn_gate.weight")  # swap in Q4_0 bytes of the right element count
    return spec.with_tensor(LAST, data=q40.data[:HIDDEN * FFN // 32 * 18])


# ----- metadata values -----

def _meta(key: str, vtype: int, value, kind: str, pattern: str, etype: int | None = None) -> None:
    name = f"{key} = {value!r}"[:80]
    assert name not in ATTACKS, name
    ATTACKS[name] = lambda spec: (spec.set(key, vtype, value, etype).encode(), kind, pattern)


_meta("llama.attention.head_count", U32, 0, CONFIG, r"llama.attention.head_count = 0: must be a positive integer")
_meta("llama.attention.head_count", U32, 5, CONFIG, r"llama.embedding_length .*64.* is not a multiple of llama.attention.head_count .*5")
_meta("llama.attention.head_count", I32, -4, CONFIG, r"llama.attention.head_count = -4: must be a positive integer")
_meta("llama.attention.head_count", F32, 4.0, CONFIG, r"llama.attention.head_count = 4.0: must be a positive integer")
_meta("llama.attention.head_count", STRING, "4", CONFIG, r"llama.attention.head_count = '4': must be a positive integer")
_meta("llama.attention.head_count", BOOL, True, CONFIG, r"llama.attention.head_count = True: must be a positive integer")
_meta("llama.attention.head_count_kv", U32, 0, CONFIG, r"llama.attention.head_count_kv = 0: must be a positive integer")
_meta("llama.attention.head_count_kv", U32, 3, CONFIG, r"head_count .*4.* is not a multiple of llama.attention.head_count_kv .*3")
_meta("llama.embedding_length", U32, 0, CONFIG, r"llama.embedding_length = 0: must be a positive integer")
_meta("llama.embedding_length", U64, 1 << 40, CONFIG, r"head size 274877906944 = \d+ does not match the 64 rows of blk.0.attn_q")
_meta("llama.feed_forward_length", U32, 0, CONFIG, r"llama.feed_forward_length = 0: must be a positive integer")
_meta("llama.context_length", U32, 0, CONFIG, r"llama.context_length = 0: must be a positive integer")
_meta("llama.attention.key_length", U32, 1 << 30, CONFIG, r"head size 1073741824 = \d+ does not match the 64 rows of blk.0.attn_q")
_meta("llama.attention.layer_norm_rms_epsilon", F32, 0.0, CONFIG, r"layer_norm_rms_epsilon = 0.0: must be a positive")
_meta("llama.attention.layer_norm_rms_epsilon", F32, -1e-5, CONFIG, r"layer_norm_rms_epsilon = -9.99\d*e-06: must be a positive")
_meta("llama.attention.layer_norm_rms_epsilon", F32, float("nan"), CONFIG, r"layer_norm_rms_epsilon = nan")
_meta("llama.attention.layer_norm_rms_epsilon", STRING, "1e-5", CONFIG, r"layer_norm_rms_epsilon = '1e-5'")
_meta("llama.rope.freq_base", F32, 0.0, CONFIG, r"llama.rope.freq_base = 0.0: must be a positive")
_meta("llama.rope.freq_base", F32, float("inf"), CONFIG, r"llama.rope.freq_base = inf: must be a positive")
_meta("llama.rope.dimension_count", U32, 0, CONFIG, r"llama.rope.dimension_count = 0")
_meta("llama.block_count", U32, 100_000, CONFIG, r"llama.block_count = 100000: the file holds the tensors of 2 blocks")
_meta("llama.block_count", U32, 1 << 31, CONFIG, r"llama.block_count = 2147483648: the file holds the tensors of 2")
_meta("llama.block_count", U32, 3, CONFIG, r"llama.block_count = 3: the file holds the tensors of 2 blocks")
_meta("llama.block_count", U32, 0, CONFIG, r"llama.block_count = 0: must be a positive integer")
_meta("llama.vocab_size", U64, 1 << 40, CONFIG, r"vocab_size x llama.embedding_length = \[1099511627776, 64\] does not match token_embd.weight")
_meta("general.architecture", U32, 7, CONFIG, r"GGUF architecture 7 is not supported")
_meta("general.architecture", STRING, "x" * 10_000_000, CONFIG, r"GGUF architecture 'xxx.*\.\.\.\[\+\d+ chars\] is not")
_meta("tokenizer.ggml.tokens", ARRAY, list(range(VOCAB)), WEIGHTS, r"tokenizer.ggml.tokens must be an array of strings", I32)
_meta("tokenizer.ggml.scores", ARRAY, [1] * VOCAB, WEIGHTS, r"tokenizer.ggml.scores must be an array of floats", U8)
_meta("tokenizer.ggml.scores", ARRAY, [1.0] * 3, WEIGHTS, r"tokenizer.ggml.scores holds 3 values for 400 tokens", F32)
_meta("tokenizer.ggml.token_type", ARRAY, ["1"] * VOCAB, WEIGHTS, r"tokenizer.ggml.token_type must be an array of integers", STRING)
_meta("tokenizer.ggml.merges", ARRAY, [1, 2], WEIGHTS, r"tokenizer.ggml.merges must be an array of strings", U32)
_meta("tokenizer.ggml.merges", ARRAY, ["nospace"], WEIGHTS, r"tokenizer.ggml.merges\[0\] = 'nospace' is not two tokens", STRING)
_meta("tokenizer.ggml.model", STRING, "rwkv", WEIGHTS, r"tokenizer.ggml.model 'rwkv' is not supported")
_meta("tokenizer.ggml.model", U32, 3, WEIGHTS, r"tokenizer.ggml.model 3 is not supported")
_meta("tokenizer.chat_template", U32, 3, WEIGHTS, r"tokenizer.chat_template = 3: must be a string")
# Optional ids that are wrong: the file loads, the token is absent.
for _key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
    _meta(_key, STRING, "1", LOADS, "")
    _meta(_key, U32, 1_000_000, LOADS, "")
    _meta(_key, I32, -1, LOADS, "")
    _meta(_key, F32, 1.0, LOADS, "")
    ATTACKS[f"{_key} missing"] = (lambda spec, key=_key: (spec.drop(key).encode(), LOADS, ""))
