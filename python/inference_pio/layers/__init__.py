"""Model-agnostic nn.Modules built from ``inference_pio.ops``; plugins compose them.

- :class:`Linear`: ``y = x W^T (+ b)`` with an optional preallocated output.
- :class:`RMSNorm`: RMSNorm, or the residual add fused with it.
- :class:`RotaryEmbedding`: owns the cos/sin cache, applies RoPE to q/k in place.
- :class:`PagedAttention`: writes k/v into the paged cache and attends over it.
- :class:`GatedMLP`: fused gate_up projection, SiLU-and-multiply, down projection.
- :class:`QuantizedLinear`, :class:`QuantizedEmbedding`: over GGUF-block weights (``swap_in_quantized``).
- :class:`Workspace`: reused activation buffers, so a step allocates nothing once warm.
"""

from .attention import PagedAttention
from .linear import Linear
from .mlp import GatedMLP
from .norm import RMSNorm
from .quantized import QuantizedEmbedding, QuantizedLinear, swap_in_quantized
from .rotary import RotaryEmbedding
from .workspace import Workspace

__all__ = ["GatedMLP", "Linear", "PagedAttention", "QuantizedEmbedding", "QuantizedLinear", "RMSNorm",
           "RotaryEmbedding", "Workspace", "swap_in_quantized"]
