"""Tensor parallelism for the Llama-family decoder over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Each of ``world_size`` ranks holds a slice of every layer (Megatron's split):

- qkv and gate_up are column-parallel: a rank keeps its attention heads' (and KV heads') rows and
  its share of the intermediate rows, so attention and the activation run locally;
- o and down are row-parallel: a rank multiplies its columns and one all-reduce sums the partial
  outputs (two all-reduces per layer);
- the embedding and the LM head are vocabulary-parallel: a rank holds ``ceil(vocab / world)`` rows;
  embedding rows outside them are zero before an all-reduce, head logits are all-gathered.

Each rank reads only its slices from the safetensors files (``safe_open(...).get_slice``). The model
class and config come from the caller (a plugin), so this layer imports no plugin. KV heads must split
evenly over the ranks: replicating them is not supported, and such a model is refused by name.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors import safe_open

from ..layers import Linear
from ..weights import WeightLoadError, open_checkpoint, resolve_dtype


def init_tensor_parallel(rank: int, world_size: int, init_method: str, backend: str | None = None,
                         timeout_s: float = 60.0) -> None:
    """Joins the process group; a collective that waits ``timeout_s`` for a dead rank raises."""
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))


def shutdown_tensor_parallel() -> None:
    """Leaves the process group. Call it before the process exits: a gloo group left to the
    interpreter's teardown can destroy a still-running worker thread and abort the process
    ("terminate called without an active exception") after its work finished cleanly."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_config(cfg, world_size: int):
    """``cfg`` with one rank's heads, KV heads and intermediate size; a clear error when they do not split."""
    for name in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        value = getattr(cfg, name)
        if value % world_size:
            hint = " (replicating KV heads is not supported)" if name == "num_key_value_heads" else ""
            raise ValueError(f"tensor parallelism over {world_size} ranks needs {name} ({value}) to be a multiple "
                             f"of {world_size}{hint}")
    return dataclasses.replace(cfg, num_attention_heads=cfg.num_attention_heads // world_size,
                               num_key_value_heads=cfg.num_key_value_heads // world_size,
                               intermediate_size=cfg.intermediate_size // world_size, head_dim=cfg.head_dim)


class RowParallelLinear(nn.Module):
    """This rank's input columns of a linear; the partial products are summed over the ranks.

    A wrapper, not a ``Linear`` subclass: the fused C++ decode step accepts only plain projections, so
    a tensor-parallel model always runs the per-op path, where the all-reduces happen.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype):
        super().__init__()
        self.linear = Linear(in_features, out_features, False, dtype, "meta")
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device="meta"), requires_grad=False) \
            if bias else None

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        y = self.linear(x, out=out)
        dist.all_reduce(y)
        if self.bias is not None:
            y += self.bias
        return y


class VocabParallelEmbedding(nn.Module):
    """Rows ``[start, start + rows)`` of the table; the other ranks supply the rest through an all-reduce."""

    def __init__(self, rows: int, start: int, hidden: int, dtype: torch.dtype):
        super().__init__()
        self.start, self.rows = start, rows
        self.weight = nn.Parameter(torch.empty(rows, hidden, dtype=dtype, device="meta"), requires_grad=False)

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.rows)
        rows = torch.index_select(self.weight, 0, local.masked_fill(outside, 0), out=out)
        rows.masked_fill_(outside.unsqueeze(1), 0)
        dist.all_reduce(rows)
        return rows


class VocabParallelHead(nn.Module):
    """This rank's vocabulary rows of the LM head; the logits of all ranks are gathered."""

    def __init__(self, rows: int, hidden: int, vocab_size: int, world_size: int, dtype: torch.dtype):
        super().__init__()
        self.vocab_size, self.world_size = vocab_size, world_size
        self.linear = Linear(hidden, rows, False, dtype, "meta")

    def forward(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        local = self.linear(h)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        logits = torch.cat(parts, dim=1)[:, :self.vocab_size]
        return out.copy_(logits) if out is not None else logits


def tensor_parallel_model(model_class, cfg, rank: int, world_size: int,
                          device: str | torch.device = "cpu") -> nn.Module:
    """``model_class`` (the Llama decoder) holding rank ``rank``'s slices of ``cfg.model_path``'s weights."""
    if cfg.model_path is None or not Path(cfg.model_path).is_dir():
        raise ValueError(f"tensor parallelism reads a safetensors checkpoint folder, got {cfg.model_path!r}")
    local = shard_config(cfg, world_size)
    dtype = resolve_dtype(cfg.dtype) or torch.float32
    model = model_class(local, dtype, device)
    vocab_rows = -(-cfg.vocab_size // world_size)
    model.embed_tokens = VocabParallelEmbedding(vocab_rows, rank * vocab_rows, cfg.hidden_size, dtype)
    model.lm_head = VocabParallelHead(vocab_rows, cfg.hidden_size, cfg.vocab_size, world_size, dtype)
    for layer in model.layers:
        layer.self_attn.o_proj = RowParallelLinear(local.q_size, cfg.hidden_size, cfg.attention_bias, dtype)
        layer.mlp.down_proj = RowParallelLinear(local.intermediate_size, cfg.hidden_size, cfg.mlp_bias, dtype)
    state = _ShardReader(cfg, local, rank, vocab_rows, dtype, device).state()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise WeightLoadError(f"{cfg.model_path}: rank {rank}'s shards do not fit the model; "
                              f"missing {missing}, unexpected {unexpected}")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class _ShardReader:
    """Reads one rank's slices (rows of column-parallel weights, columns of row-parallel ones)."""

    def __init__(self, cfg, local, rank: int, vocab_rows: int, dtype: torch.dtype, device):
        self.cfg, self.local, self.rank, self.vocab_rows, self.dtype = cfg, local, rank, vocab_rows, dtype
        self.device = device
        self.files = {name: file for name, (file, _) in open_checkpoint(cfg.model_path).tensors.items()}
        self._open: dict[Path, object] = {}

    def state(self) -> dict[str, torch.Tensor]:
        c, lc, r = self.cfg, self.local, self.rank
        q, kv, inter = lc.q_size, lc.kv_size, lc.intermediate_size
        out = {"norm.weight": self.read("model.norm.weight")}
        embed = self.vocab_slice("model.embed_tokens.weight")
        out["embed_tokens.weight"] = embed
        head = "lm_head.weight" if "lm_head.weight" in self.files or not c.tie_word_embeddings else None
        out["lm_head.linear.weight"] = self.vocab_slice(head) if head else embed
        for i in range(c.num_hidden_layers):
            p, ours = f"model.layers.{i}.", f"layers.{i}."
            for norm in ("input_layernorm", "post_attention_layernorm"):
                out[f"{ours}{norm}.weight"] = self.read(f"{p}{norm}.weight")
            suffixes = ("weight", "bias") if c.attention_bias else ("weight",)
            for s in suffixes:
                out[f"{ours}self_attn.qkv_proj.{s}"] = torch.cat([
                    self.read(f"{p}self_attn.q_proj.{s}", rows=(r * q, q)),
                    self.read(f"{p}self_attn.k_proj.{s}", rows=(r * kv, kv)),
                    self.read(f"{p}self_attn.v_proj.{s}", rows=(r * kv, kv))])
            out[f"{ours}self_attn.o_proj.linear.weight"] = self.read(f"{p}self_attn.o_proj.weight", cols=(r * q, q))
            if c.attention_bias:
                out[f"{ours}self_attn.o_proj.bias"] = self.read(f"{p}self_attn.o_proj.bias")
            for s in ("weight", "bias") if c.mlp_bias else ("weight",):
                out[f"{ours}mlp.gate_up_proj.{s}"] = torch.cat([
                    self.read(f"{p}mlp.gate_proj.{s}", rows=(r * inter, inter)),
                    self.read(f"{p}mlp.up_proj.{s}", rows=(r * inter, inter))])
            out[f"{ours}mlp.down_proj.linear.weight"] = self.read(f"{p}mlp.down_proj.weight", cols=(r * inter, inter))
            if c.mlp_bias:
                out[f"{ours}mlp.down_proj.bias"] = self.read(f"{p}mlp.down_proj.bias")
        return out

    def vocab_slice(self, name: str) -> torch.Tensor:
        """This rank's vocabulary rows, zero-padded to ``vocab_rows`` on the last rank."""
        start = self.rank * self.vocab_rows
        rows = self.read(name, rows=(start, max(0, min(self.vocab_rows, self.cfg.vocab_size - start))))
        if rows.shape[0] < self.vocab_rows:
            rows = torch.cat([rows, rows.new_zeros(self.vocab_rows - rows.shape[0], rows.shape[1])])
        return rows

    def read(self, name: str, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None):
        if name not in self.files:
            raise WeightLoadError(f"{self.cfg.model_path}: no tensor {name!r} in the checkpoint")
        file = self.files[name]
        if file not in self._open:
            self._open[file] = safe_open(str(file), framework="pt")
        part = self._open[file].get_slice(name)
        if rows is not None:
            tensor = part[rows[0]:rows[0] + rows[1]]
        elif cols is not None:
            tensor = part[:, cols[0]:cols[0] + cols[1]]
        else:
            tensor = part[:]
        return tensor.to(self.device, self.dtype).contiguous()
