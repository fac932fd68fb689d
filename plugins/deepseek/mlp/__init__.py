"""DeepSeek's mixture-of-experts: the top-k routers of V2 / V3 and the shared + routed experts block."""

from .moe import MixtureOfExperts
from .router import TopKRouter, sigmoid_group_topk, softmax_topk

__all__ = ["MixtureOfExperts", "TopKRouter", "sigmoid_group_topk", "softmax_topk"]
