"""Random-weight GGUF files of a Llama shape (TinyLlama-1.1B's by default) for speed benchmarks.

Written with the ``gguf`` package. Quantized tensors are random blocks written directly (valid
blocks: random quants and small finite fp16 scales), not quantized from float weights: speed does
not depend on the values, and quantizing 1.1B weights to K-quants in Python takes many minutes.
The tokenizer is a synthetic SentencePiece vocabulary (byte tokens, then placeholder pieces) so
every implementation can load the file; benchmarks feed token ids directly.

Type mixes follow llama.cpp's presets: ``Q4_0`` / ``Q8_0`` (every matrix; the embedding too),
``Q4_K_M`` (Q4_K, with Q6_K for the output, attn_v and every other layer's ffn_down).

    python -m benchmarks.gguf.random_gguf --type Q4_K_M --out /tmp/tinyllama-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

TYPES = ("Q4_0", "Q8_0", "Q4_K_M")


@dataclass(frozen=True)
class LlamaShape:
    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_layers: int = 22
    num_heads: int = 32
    num_kv_heads: int = 4
    context_length: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5


TINYLLAMA_1_1B = LlamaShape()


def cache_dir() -> Path:
    """Where written files are kept between runs (``INFERENCE_PIO_BENCH_CACHE`` or ~/.cache)."""
    root = os.environ.get("INFERENCE_PIO_BENCH_CACHE") or Path.home() / ".cache" / "inference-pio-bench"
    return Path(root)


def tensor_types(preset: str, shape: LlamaShape) -> dict[str, str]:
    """ggml type name of every matrix (by GGUF tensor name) for a preset."""
    if preset not in TYPES:
        raise ValueError(f"preset must be one of {', '.join(TYPES)}, got {preset!r}")
    base = "Q4_K" if preset == "Q4_K_M" else preset
    types = {"token_embd.weight": base, "output.weight": "Q6_K" if preset == "Q4_K_M" else base}
    for i in range(shape.num_layers):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            types[f"blk.{i}.{name}.weight"] = base
        if preset == "Q4_K_M":  # llama.cpp's Q4_K_M: more bits where the error costs most
            types[f"blk.{i}.attn_v.weight"] = "Q6_K"
            if i % 2 == 0:
                types[f"blk.{i}.ffn_down.weight"] = "Q6_K"
    return types


def matrix_shapes(shape: LlamaShape) -> dict[str, tuple[int, int]]:
    """[rows, columns] of every matrix (rows = outputs), by GGUF tensor name."""
    h, head_dim = shape.hidden_size, shape.hidden_size // shape.num_heads
    kv = shape.num_kv_heads * head_dim
    shapes = {"token_embd.weight": (shape.vocab_size, h), "output.weight": (shape.vocab_size, h)}
    for i in range(shape.num_layers):
        p = f"blk.{i}."
        shapes.update({p + "attn_q.weight": (h, h), p + "attn_k.weight": (kv, h), p + "attn_v.weight": (kv, h),
                       p + "attn_output.weight": (h, h), p + "ffn_gate.weight": (shape.intermediate_size, h),
                       p + "ffn_up.weight": (shape.intermediate_size, h),
                       p + "ffn_down.weight": (h, shape.intermediate_size)})
    return shapes


# Byte offsets of the fp16 scale fields in one block of each type, and a scale for them (small
# enough that activations stay finite through the layers).
_SCALE_FIELDS = {"Q4_0": ((0,), 2e-3), "Q8_0": ((0,), 2e-4), "Q4_K": ((0, 2), 1e-4), "Q6_K": ((208,), 1e-4)}


def random_blocks(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [rows, row_bytes] of valid random ``qtype`` blocks."""
    import gguf

    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    if cols % block_elems:
        raise ValueError(f"{cols} columns are not a multiple of the {qtype} block size {block_elems}")
    blocks = rng.integers(0, 256, size=(rows, cols // block_elems, block_bytes), dtype=np.uint8)
    offsets, scale = _SCALE_FIELDS[qtype]
    for off in offsets:
        d = (rng.random((rows, cols // block_elems), dtype=np.float32) * scale + scale / 4).astype(np.float16)
        blocks[:, :, off:off + 2] = d.view(np.uint8).reshape(rows, cols // block_elems, 2)
    if qtype == "Q6_K":  # signed 8-bit sub-block scales at bytes 192..207: keep them small
        blocks[:, :, 192:208] = rng.integers(-16, 17, size=(rows, cols // block_elems, 16)).astype(np.int8).view(np.uint8)
    return blocks.reshape(rows, -1)


def write_random_gguf(path: Path, preset: str, shape: LlamaShape = TINYLLAMA_1_1B, seed: int = 0) -> Path:
    """Writes a random-weight Llama GGUF of ``shape`` with ``preset``'s types to ``path``."""
    import gguf

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name(f"random-llama-{preset}")
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.hidden_size)
    writer.add_block_count(shape.num_layers)
    writer.add_feed_forward_length(shape.intermediate_size)
    writer.add_head_count(shape.num_heads)
    writer.add_head_count_kv(shape.num_kv_heads)
    writer.add_rope_dimension_count(shape.hidden_size // shape.num_heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_norm_eps)
    writer.add_file_type({"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}[preset])  # llama_ftype values
    _add_tokenizer(writer, shape.vocab_size)
    types = tensor_types(preset, shape)
    for name, (rows, cols) in matrix_shapes(shape).items():
        writer.add_tensor(name, random_blocks(types[name], rows, cols, rng),
                          raw_dtype=gguf.GGMLQuantizationType[types[name]])
    norms = ["output_norm.weight"] + [f"blk.{i}.{n}.weight" for i in range(shape.num_layers)
                                      for n in ("attn_norm", "ffn_norm")]
    for name in norms:
        writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(shape.hidden_size)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def _add_tokenizer(writer, vocab_size: int) -> None:
    """A SentencePiece ("llama") vocabulary: <unk> <s> </s>, the 256 byte tokens, then placeholders."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(vocab_size - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab_size - 259)  # unknown, control, byte, normal
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(vocab_size)])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


def cached_random_gguf(preset: str, shape: LlamaShape = TINYLLAMA_1_1B, folder: Path | None = None) -> Path:
    """The file for ``preset`` and ``shape`` in ``folder`` (default ``cache_dir()``), written if missing."""
    key = "-".join(str(v) for v in asdict(shape).values())
    path = (folder or cache_dir()) / f"random-llama-{key}-{preset.lower()}.gguf"
    return path if path.exists() else write_random_gguf(path, preset, shape)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--type", choices=TYPES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(write_random_gguf(args.out, args.type))


if __name__ == "__main__":
    main()
