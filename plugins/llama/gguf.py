"""Loading a Llama-architecture GGUF into ``LlamaModel``: quantized weights stay in their blocks.

q/k/v and gate/up are fused as for safetensors when their parts share a type (quantized rows
concatenate); a file that mixes types inside a group (Q4_K_M keeps V in Q6_K) gets a
``RowSplitLinear`` there instead, each part computing its own slice of the output.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from inference_pio.layers import Linear, swap_in_quantized
from inference_pio.weights.gguf_file import open_gguf
from inference_pio.weights.gguf_loader import fuse_gguf_rows, load_gguf_state


class RowSplitLinear(nn.Module):
    """A fused projection kept as ``parts`` (``Linear`` or ``QuantizedLinear``): ``y = [p(x) for p]``
    concatenated along the features, written into ``out [T, sum(out_features)]`` when given."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        pieces = [part(x) for part in self.parts]
        return torch.cat(pieces, dim=-1) if out is None else torch.cat(pieces, dim=-1, out=out)


_GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj"), "qkv_proj"), ("mlp", ("gate_proj", "up_proj"), "gate_up_proj"))


def load_gguf_weights(model: nn.Module, source, device: str | torch.device = "cpu") -> None:
    """Read the GGUF ``source`` (path or opened ``GGUFFile``) into ``model`` (a ``LlamaModel`` on meta).

    Raises ``WeightLoadError`` naming the file and the tensors at fault.
    """
    gguf = open_gguf(source)
    cfg = model.config
    state = load_gguf_state(gguf, model.checkpoint_shapes(), dtype=model.compute_dtype, device=device,
                            qk_heads=(cfg.num_attention_heads, cfg.num_key_value_heads),
                            tie_word_embeddings=cfg.tie_word_embeddings)
    for i in range(cfg.num_hidden_layers):
        for block, names, fused in _GROUPS:
            prefix = f"model.layers.{i}.{block}."
            if not fuse_gguf_rows(state, [f"{prefix}{n}.weight" for n in names], f"{prefix}{fused}.weight"):
                _split(model, state, prefix, names, fused)
                continue
            if f"{prefix}{names[0]}.bias" in state:
                fuse_gguf_rows(state, [f"{prefix}{n}.bias" for n in names], f"{prefix}{fused}.bias")
    ours = {name.removeprefix("model."): t for name, t in state.items()}
    state.clear()
    swap_in_quantized(model, ours)
    model.adopt_hf_state(ours, where=str(gguf.path))


def _split(model: nn.Module, state: dict, prefix: str, names: tuple[str, ...], fused: str) -> None:
    """Puts a ``RowSplitLinear`` of meta ``Linear`` parts in place of the fused module; the parts'
    tensors are renamed to ``<fused>.parts.<j>.*`` so swapping and loading fill them as usual."""
    module_path = prefix.removeprefix("model.") + fused
    old = model.get_submodule(module_path)
    parts = []
    for j, name in enumerate(names):
        weight = state.pop(f"{prefix}{name}.weight")
        bias = state.pop(f"{prefix}{name}.bias", None)
        state[f"{prefix}{fused}.parts.{j}.weight"] = weight
        if bias is not None:
            state[f"{prefix}{fused}.parts.{j}.bias"] = bias
        with torch.device("meta"):
            parts.append(Linear(old.in_features, weight.shape[0], bias is not None, model.compute_dtype))
    parent_path, _, attr = module_path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, RowSplitLinear(parts))
