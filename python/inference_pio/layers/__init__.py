"""Model-agnostic nn.Modules built from ``inference_pio.ops``; plugins compose them.

- :class:`Linear`: ``y = x W^T (+ b)`` with an optional preallocated output.
- :class:`RMSNorm`: RMSNorm, or the residual add fused with it.
- :class:`RotaryEmbedding`: owns the cos/sin cache, applies RoPE to q/k in place.
- :class:`PagedAttention`: writes k/v into the paged cache and attends over it.
- :class:`GatedMLP`: fused gate_up projection, SiLU-and-multiply, down projection.
- :class:`QuantizedLinear`, :class:`QuantizedEmbedding`: over GGUF-block weights (``swap_in_quantized``).
- :class:`Workspace`: reused activation buffers, so a step allocates nothing once warm.

The shared Llama-family decoder is built from these (import it from its module, it pulls in the
fused step): ``decoder.DecoderModel`` (embedding, pre-norm blocks, head; switches from the config),
``decoder_weights`` (checkpoint names and stacking, declared as data), ``decoder_gguf`` (GGUF
loading), ``step_context.StepContext`` (what one step's layers read), ``decode_plan.DecodePlan``
(the model's modules by role) and ``fused_decode`` (the C++ step that executes that plan).
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
