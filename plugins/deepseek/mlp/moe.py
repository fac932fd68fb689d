"""DeepSeek's mixture-of-experts block: shared experts for every token plus top-k routed experts."""

from __future__ import annotations

import torch
import torch.nn as nn

from inference_pio.layers import GatedMLP, Workspace

from ..config import DeepSeekConfig
from .router import TopKRouter


class MixtureOfExperts(nn.Module):
    """``out = shared_experts(x) + sum_k weight_k * experts[id_k](x)``.

    Each expert is a ``GatedMLP`` of ``moe_intermediate_size`` (gate/up rows fused at load); the
    shared experts are one ``GatedMLP`` of ``n_shared_experts * moe_intermediate_size``. Tokens are
    grouped by expert, so each chosen expert runs once per step on its rows (which experts were
    chosen is read on the host: one device sync per layer on GPUs).
    """

    def __init__(self, cfg: DeepSeekConfig, dtype: torch.dtype):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.gate = TopKRouter(cfg)
        self.experts = nn.ModuleList(GatedMLP(cfg.hidden_size, cfg.moe_intermediate_size, False, dtype)
                                     for _ in range(cfg.n_routed_experts))
        self.shared_experts = (GatedMLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts,
                                        cfg.mlp_bias, dtype) if cfg.n_shared_experts else None)

    def forward(self, x: torch.Tensor, out: torch.Tensor, workspace: Workspace) -> torch.Tensor:
        """``x [T, hidden]`` -> ``out [T, hidden]`` (model dtype, may alias ``x``); scratch rows live in
        ``workspace``."""
        weights, ids = self.gate(x)
        flat = ids.flatten()
        order = torch.argsort(flat, stable=True)
        token_of = order // self.top_k
        weight_of = weights.flatten()[order].unsqueeze(-1)
        counts = torch.bincount(flat, minlength=len(self.experts)).tolist()
        t, hidden = x.shape
        routed = workspace.get("moe.routed", t, hidden, x.dtype).zero_()
        start = 0
        for expert, n in zip(self.experts, counts):
            if not n:
                continue
            rows = token_of[start:start + n]
            xe = torch.index_select(x, 0, rows, out=workspace.get("moe.x", n, hidden, x.dtype))
            ye = expert(xe, out=workspace.get("moe.y", n, hidden, x.dtype), workspace=workspace)
            ye.mul_(weight_of[start:start + n])  # float32 weights: one rounding, as transformers
            routed.index_add_(0, rows, ye)
            start += n
        if self.shared_experts is None:
            return out.copy_(routed)
        # Last: ``out`` may be ``x`` itself (the decoder's residual-stream buffer).
        self.shared_experts(x, out=out, workspace=workspace)
        return out.add_(routed)
