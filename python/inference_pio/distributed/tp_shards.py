"""One rank's slices of a Llama-family checkpoint (safetensors folder or GGUF file), named like the
tensor-parallel model's parameters.

Rank ``r`` of ``W`` reads rows ``[r * n, (r + 1) * n)`` of q, k, v, gate and up (its heads, its KV
heads, its share of the intermediate rows), the matching columns of o and down, and
``ceil(vocab / W)`` vocabulary rows of the embedding and the head (the last rank's zero-padded:
zero bytes are zero values in every supported GGUF type too). Norms and the biases of o and down
(and Qwen3's per-head q/k norms) are read whole. Nothing else of the file is read.

GGUF files keep their quantization: rows (and block-aligned columns) of a quantized matrix are
``QuantizedTensor``s. q/k/v (gate/up) are fused into one projection when their parts share a type;
a file that mixes types in a group (Q4_K_M keeps V in Q6_K) keeps the parts apart (``split_groups``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..weights import WeightLoadError, fuse_gguf_rows, open_checkpoint
from ..weights.gguf_file import GGUFFile
from ..weights.gguf_slices import ColumnSliceError, GGUFSlices

# Architectures whose llama.cpp converter permutes Q/K rows for its rotary layout (see gguf_loader).
_PERMUTED_QK = ("llama",)


class SafetensorsSlices:
    """Slices of a safetensors checkpoint folder (``safe_open(...).get_slice``), in ``dtype``."""

    def __init__(self, folder: str | Path, dtype: torch.dtype, device):
        self.folder, self.dtype, self.device = folder, dtype, device
        self.files = {name: file for name, (file, _) in open_checkpoint(folder).tensors.items()}
        self._open: dict[Path, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str, shape: tuple[int, ...], rows=None, cols=None, heads=None) -> torch.Tensor:
        if name not in self.files:
            raise WeightLoadError(f"{self.folder}: no tensor {name!r} in the checkpoint")
        file = self.files[name]
        if file not in self._open:
            self._open[file] = safe_open(str(file), framework="pt")
        part = self._open[file].get_slice(name)
        if tuple(part.get_shape()) != tuple(shape):
            raise WeightLoadError(f"{self.folder}: tensor {name} has shape {part.get_shape()}, the model needs "
                                  f"{list(shape)}")
        if rows is not None:
            tensor = part[rows[0]:rows[0] + rows[1]]
        elif cols is not None:
            tensor = part[:, cols[0]:cols[0] + cols[1]]
        else:
            tensor = part[:]
        return tensor.to(self.device, self.dtype).contiguous()


def open_slices(cfg, dtype: torch.dtype, device, gguf: GGUFFile | None = None):
    """The slice reader of ``cfg.model_path``: ``gguf`` when given (an opened GGUF file), else a folder."""
    if gguf is not None:
        return GGUFSlices(gguf, dtype, device)
    if cfg.model_path is None or not Path(cfg.model_path).is_dir():
        raise ValueError(f"tensor parallelism reads a safetensors checkpoint folder or an opened GGUF file, got "
                         f"{cfg.model_path!r}")
    return SafetensorsSlices(cfg.model_path, dtype, device)


class ShardState:
    """Rank ``rank``'s tensors for the tensor-parallel model of ``cfg`` (``local``: its shard config)."""

    def __init__(self, source, cfg, local, rank: int, vocab_rows: int):
        self.source, self.cfg, self.local, self.rank, self.vocab_rows = source, cfg, local, rank, vocab_rows
        gguf = getattr(source, "gguf", None)
        self.permuted_qk = gguf is not None and gguf.architecture in _PERMUTED_QK
        self.split_groups: dict[str, int] = {}  # module path -> parts, where a group's types differ

    def state(self) -> dict:
        """``{parameter name: tensor or QuantizedTensor}``; fills ``split_groups``."""
        c, lc, r = self.cfg, self.local, self.rank
        h, q, kv, inter = c.hidden_size, lc.q_size, lc.kv_size, lc.intermediate_size
        out = {"norm.weight": self.source.read("model.norm.weight", (h,))}
        embed = self.vocab_slice("model.embed_tokens.weight")
        out["embed_tokens.table.weight"] = embed
        tied = "lm_head.weight" not in self.source and c.tie_word_embeddings
        out["lm_head.linear.weight"] = embed if tied else self.vocab_slice("lm_head.weight")
        heads = (lc.num_attention_heads, lc.num_key_value_heads) if self.permuted_qk else (None, None)
        for i in range(c.num_hidden_layers):
            p, ours = f"model.layers.{i}.", f"layers.{i}."
            for norm in ("input_layernorm", "post_attention_layernorm"):
                out[f"{ours}{norm}.weight"] = self.source.read(f"{p}{norm}.weight", (h,))
            if getattr(c, "qk_norm", False):  # per-head norms (Qwen3): the same weights for every head
                for norm in ("q_norm", "k_norm"):
                    out[f"{ours}self_attn.{norm}.weight"] = self.source.read(f"{p}self_attn.{norm}.weight", (c.head_dim,))
            self.column_group(out, f"{ours}self_attn.qkv_proj", getattr(c, "qkv_bias", c.attention_bias), [
                (f"{p}self_attn.q_proj", c.q_size, q, heads[0]), (f"{p}self_attn.k_proj", c.kv_size, kv, heads[1]),
                (f"{p}self_attn.v_proj", c.kv_size, kv, None)])
            out[f"{ours}self_attn.o_proj.linear.weight"] = self.input_columns(f"{p}self_attn.o_proj.weight", c.q_size, q)
            if getattr(c, "o_bias", c.attention_bias):
                out[f"{ours}self_attn.o_proj.bias"] = self.source.read(f"{p}self_attn.o_proj.bias", (h,))
            self.column_group(out, f"{ours}mlp.gate_up_proj", c.mlp_bias, [
                (f"{p}mlp.gate_proj", c.intermediate_size, inter, None),
                (f"{p}mlp.up_proj", c.intermediate_size, inter, None)])
            out[f"{ours}mlp.down_proj.linear.weight"] = self.input_columns(f"{p}mlp.down_proj.weight",
                                                                           c.intermediate_size, inter)
            if c.mlp_bias:
                out[f"{ours}mlp.down_proj.bias"] = self.source.read(f"{p}mlp.down_proj.bias", (h,))
        return out

    def column_group(self, out: dict, fused: str, bias: bool, parts: list[tuple[str, int, int, int | None]]) -> None:
        """This rank's rows of each part (``(name, full rows, rows per rank, Q/K heads or None)``), fused
        into ``fused`` or, when their weights' types differ, kept as ``fused.parts.<j>``."""
        suffixes = ("weight", "bias") if bias else ("weight",)
        read = {s: [self.read_rows(f"{name}.{s}", full, n, heads, s) for name, full, n, heads in parts]
                for s in suffixes}
        names = {s: [f"{fused}.parts.{j}.{s}" for j in range(len(parts))] for s in suffixes}
        for s in suffixes:
            out.update(zip(names[s], read[s]))
        if fuse_gguf_rows(out, names["weight"], f"{fused}.weight"):
            if bias:
                fuse_gguf_rows(out, names["bias"], f"{fused}.bias")
        else:
            self.split_groups[fused] = len(parts)

    def input_columns(self, name: str, full: int, n: int):
        """This rank's ``n`` of a row-parallel weight's ``full`` input columns. A quantized GGUF matrix whose
        share cuts its blocks is refused: dequantizing it would multiply its memory (~7x for Q4 in float32)
        on every rank, where tensor parallelism is meant to save memory."""
        try:
            return self.source.read(name, (self.cfg.hidden_size, full), cols=(self.rank * n, n))
        except ColumnSliceError as e:
            world = full // n
            smaller = " a type of 32-element blocks (Q8_0, Q4_0, Q5_0...) or" if n % 32 == 0 else ""
            raise ColumnSliceError(f"{e}: tensor parallelism over {world} ranks gives each rank {n} of its {full} input "
                                   f"columns, and a quantized row-parallel weight can only be split on whole blocks "
                                   f"({n} is not a multiple of {e.block}); choose a tensor-parallel size that splits "
                                   f"{full} into multiples of {e.block}, or a file that stores this tensor in{smaller} "
                                   "a float type", e.block) from None

    def read_rows(self, name: str, full: int, n: int, heads: int | None, suffix: str):
        shape = (full, self.cfg.hidden_size) if suffix == "weight" else (full,)
        return self.source.read(name, shape, rows=(self.rank * n, n), heads=heads)

    def vocab_slice(self, name: str):
        """This rank's vocabulary rows, zero-padded to ``vocab_rows`` on the last rank."""
        c = self.cfg
        start = self.rank * self.vocab_rows
        count = max(0, min(self.vocab_rows, c.vocab_size - start))
        rows = self.source.read(name, (c.vocab_size, c.hidden_size), rows=(start, count))
        if count == self.vocab_rows:
            return rows
        if isinstance(rows, torch.Tensor):
            return torch.cat([rows, rows.new_zeros(self.vocab_rows - count, rows.shape[1])])
        data = torch.cat([rows.data, rows.data.new_zeros(self.vocab_rows - count, rows.data.shape[1])])
        return type(rows)(data, rows.qtype, (self.vocab_rows, rows.shape[1]))
