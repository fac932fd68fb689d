"""Loading a GGUF into the shared decoder: quantized weights stay in their blocks.

The stacks the config's ``weight_layout`` declares (q/k/v, gate/up) are fused as for safetensors
when their parts share a type (quantized rows concatenate); a file that mixes types inside a
group (Q4_K_M keeps V in Q6_K) gets a ``RowSplitLinear`` there instead, each part computing its
own slice of the output.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..weights.gguf_file import open_gguf
from ..weights.gguf_loader import fuse_gguf_rows, load_gguf_state
from .decoder_weights import LAYER_PREFIX, Stack
from .linear import Linear
from .quantized import swap_in_quantized
from .row_split import RowSplitLinear


def load_gguf_weights(model: nn.Module, source, device: str | torch.device = "cpu") -> None:
    """Read the GGUF ``source`` (path or opened ``GGUFFile``) into ``model`` (a decoder on meta).

    Raises ``WeightLoadError`` naming the file and the tensors at fault.
    """
    gguf = open_gguf(source)
    cfg = model.config
    state = load_gguf_state(gguf, model.checkpoint_shapes(), dtype=model.compute_dtype, device=device,
                            qk_heads=(cfg.num_attention_heads, cfg.num_key_value_heads),
                            tie_word_embeddings=cfg.tie_word_embeddings)
    for i in range(cfg.num_hidden_layers):
        prefix = LAYER_PREFIX.format(i)
        for stack in cfg.weight_layout.stacks:
            weights = [f"{prefix}{n}.weight" for n in stack.parts]
            if not fuse_gguf_rows(state, weights, f"{prefix}{stack.target}.weight"):
                _split(model, state, prefix, stack)
                continue
            if f"{prefix}{stack.parts[0]}.bias" in state:
                fuse_gguf_rows(state, [f"{prefix}{n}.bias" for n in stack.parts], f"{prefix}{stack.target}.bias")
    ours = {name.removeprefix("model."): t for name, t in state.items()}
    state.clear()
    swap_in_quantized(model, ours)
    model.adopt_hf_state(ours, where=str(gguf.path))


def _split(model: nn.Module, state: dict, prefix: str, stack: Stack) -> None:
    """Puts a ``RowSplitLinear`` of meta ``Linear`` parts in place of the stack's module; the parts'
    tensors are renamed to ``<target>.parts.<j>.*`` so swapping and loading fill them as usual."""
    module_path = prefix.removeprefix("model.") + stack.target
    old = model.get_submodule(module_path)
    parts = []
    for j, name in enumerate(stack.parts):
        weight = state.pop(f"{prefix}{name}.weight")
        bias = state.pop(f"{prefix}{name}.bias", None)
        state[f"{prefix}{stack.target}.parts.{j}.weight"] = weight
        if bias is not None:
            state[f"{prefix}{stack.target}.parts.{j}.bias"] = bias
        with torch.device("meta"):
            parts.append(Linear(old.in_features, weight.shape[0], bias is not None, model.compute_dtype))
    parent_path, _, attr = module_path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, RowSplitLinear(parts))
