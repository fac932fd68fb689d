"""Tensor parallelism for the Llama-family decoder over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Each of ``world_size`` ranks holds a slice of every layer (Megatron's split):

- qkv and gate_up are column-parallel: a rank keeps its attention heads' (and KV heads') rows and
  its share of the intermediate rows, so attention and the activation run locally;
- o and down are row-parallel: a rank multiplies its columns and one all-reduce sums the partial
  outputs (two all-reduces per layer);
- the embedding and the LM head are vocabulary-parallel: a rank holds ``ceil(vocab / world)`` rows;
  embedding rows outside them are zero before an all-reduce, head logits are all-gathered.

Each rank reads only its slices (``tp_shards``): from the safetensors files, or from a GGUF file whose
quantized matrices stay in their blocks (rows are whole blocks; o and down need each rank's share of
their input width to be whole blocks, else they are refused by name). The model class and config come
from the caller (a plugin), so this layer imports no plugin. KV heads must split evenly over the
ranks: replicating them is not supported, and such a model is refused by name.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from ..layers import Linear, swap_in_quantized
from ..layers.row_split import RowSplitLinear
from ..weights import WeightLoadError, resolve_dtype
from ..weights.gguf_file import GGUFFile
from .tp_shards import ShardState, open_slices


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


class _Rows(nn.Embedding):
    """The local table (dense); a GGUF's quantized table replaces it with a ``QuantizedEmbedding``."""

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.index_select(self.weight, 0, ids, out=out)

    def reset_parameters(self) -> None:  # built on meta; the checkpoint supplies the values
        pass


class VocabParallelEmbedding(nn.Module):
    """Rows ``[start, start + rows)`` of the table; the other ranks supply the rest through an all-reduce."""

    def __init__(self, rows: int, start: int, hidden: int, dtype: torch.dtype):
        super().__init__()
        self.start, self.rows = start, rows
        self.table = _Rows(rows, hidden, dtype=dtype, device="meta")

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.rows)
        rows = self.table(local.masked_fill(outside, 0), out=out)
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


def tensor_parallel_model(model_class, cfg, rank: int, world_size: int, device: str | torch.device = "cpu",
                          gguf: GGUFFile | None = None) -> nn.Module:
    """``model_class`` (the Llama decoder) holding rank ``rank``'s slices of ``cfg.model_path``'s weights:
    a safetensors folder, or ``gguf`` (the opened GGUF file) when given."""
    local = shard_config(cfg, world_size)
    dtype = resolve_dtype(cfg.dtype) or torch.float32
    shards = ShardState(open_slices(cfg, dtype, device, gguf), cfg, local, rank, -(-cfg.vocab_size // world_size))
    state = shards.state()  # first: a file that cannot be split is refused before anything is built
    model = model_class(local, dtype, device)
    vocab_rows = shards.vocab_rows
    model.embed_tokens = VocabParallelEmbedding(vocab_rows, rank * vocab_rows, cfg.hidden_size, dtype)
    model.lm_head = VocabParallelHead(vocab_rows, cfg.hidden_size, cfg.vocab_size, world_size, dtype)
    for layer in model.layers:
        layer.self_attn.o_proj = RowParallelLinear(local.q_size, cfg.hidden_size, _o_bias(cfg), dtype)
        layer.mlp.down_proj = RowParallelLinear(local.intermediate_size, cfg.hidden_size, cfg.mlp_bias, dtype)
    for path, count in shards.split_groups.items():
        _split_into_parts(model, path, state, count, dtype)
    swap_in_quantized(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise WeightLoadError(f"{cfg.model_path}: rank {rank}'s shards do not fit the model; "
                              f"missing {missing}, unexpected {unexpected}")
    for p in model.parameters():
        p.requires_grad_(False)
    model.fused_decode = False  # the fused C++ step is single-process: ranks decode per op, all-reducing
    return model.eval()


def _o_bias(cfg) -> bool:
    return getattr(cfg, "o_bias", cfg.attention_bias)  # Qwen2 has q/k/v biases and none on o


def _split_into_parts(model: nn.Module, path: str, state: dict, count: int, dtype: torch.dtype) -> None:
    """Puts a ``RowSplitLinear`` of meta ``Linear``s, sized by ``state``'s ``<path>.parts.<j>.weight``, at ``path``
    (a GGUF whose q/k/v types differ: each part is this rank's rows of one of them)."""
    old = model.get_submodule(path)
    parts = [Linear(old.in_features, state[f"{path}.parts.{j}.weight"].shape[0], f"{path}.parts.{j}.bias" in state,
                    dtype, "meta") for j in range(count)]
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, RowSplitLinear(parts))
