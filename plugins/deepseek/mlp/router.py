"""Top-k expert routing of DeepSeek-V2 and V3, as transformers computes it (float32 throughout)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import DeepSeekConfig


def _keep_best_groups(choice: torch.Tensor, group_scores: torch.Tensor, topk_group: int, fill: float) -> torch.Tensor:
    """``choice [T, E]`` with every expert outside the ``topk_group`` best groups set to ``fill``."""
    tokens, n_group = group_scores.shape
    best = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best, True)
    keep = keep.unsqueeze(-1).expand(tokens, n_group, choice.shape[-1] // n_group).reshape(tokens, -1)
    return choice.masked_fill(~keep, fill)


def softmax_topk(logits: torch.Tensor, top_k: int, n_group: int | None = None,
                 topk_group: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V2: softmax scores, then greedy top-k, or (with ``n_group``) top-k among the experts
    of the ``topk_group`` groups whose best expert scores highest. Returns ``(weights, ids)`` ``[T, k]``."""
    scores = logits.softmax(dim=-1, dtype=torch.float32)
    if n_group:
        group_scores = scores.view(scores.shape[0], n_group, -1).max(dim=-1).values
        scores = _keep_best_groups(scores, group_scores, topk_group, 0.0)
    return torch.topk(scores, k=top_k, dim=-1, sorted=False)


def sigmoid_group_topk(logits: torch.Tensor, correction_bias: torch.Tensor, top_k: int, n_group: int,
                       topk_group: int, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3: sigmoid scores; ``scores + correction_bias`` chooses (groups ranked by the sum of
    their two best), the unbiased scores weigh, renormalized to sum 1 with ``normalize``."""
    scores = logits.sigmoid()
    choice = scores + correction_bias
    grouped = choice.view(choice.shape[0], n_group, -1)
    group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(dim=-1)
    choice = _keep_best_groups(choice, group_scores, topk_group, float("-inf"))
    ids = torch.topk(choice, k=top_k, dim=-1, sorted=False).indices
    weights = scores.gather(1, ids)
    if normalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights, ids


class TopKRouter(nn.Module):
    """``weight [n_routed_experts, hidden]`` float32 (kept so in every model dtype, as transformers
    does); V3 adds ``e_score_correction_bias [n_routed_experts]`` float32."""

    def __init__(self, cfg: DeepSeekConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size, dtype=torch.float32),
                                   requires_grad=False)
        self.e_score_correction_bias = (nn.Parameter(torch.empty(cfg.n_routed_experts, dtype=torch.float32),
                                                     requires_grad=False) if cfg.is_v3 else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [T, hidden]`` -> ``(weights [T, k] float32, ids [T, k] int64)``, scaled by
        ``routed_scaling_factor``."""
        c = self.cfg
        logits = F.linear(x.float(), self.weight)
        if c.is_v3:
            weights, ids = sigmoid_group_topk(logits, self.e_score_correction_bias, c.num_experts_per_tok,
                                              c.n_group or 1, c.topk_group or 1, bool(c.norm_topk_prob))
        else:
            groups = c.n_group if c.uses_groups else None
            weights, ids = softmax_topk(logits, c.num_experts_per_tok, groups, c.topk_group)
        return weights * c.routed_scaling_factor, ids
