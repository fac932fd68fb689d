"""Fused ops, one public function each, dispatched to the best backend for the tensors' device.

Every op has a ``*_reference`` implementation in plain torch (the specification the kernels
are tested against). ``use_backend(...)`` / ``INFERENCE_PIO_BACKEND`` force a backend.
"""

from ._dispatch import BACKENDS, BackendUnsupported, all_ops, use_backend
from . import rope_cache
from .activation import gelu_and_mul, gelu_and_mul_reference, silu_and_mul, silu_and_mul_reference
from .linear import linear, linear_reference
from .kv_cache import reshape_and_cache, reshape_and_cache_reference
from .paged_decode_attention import paged_decode_attention, paged_decode_attention_reference
from .prefill_attention import prefill_attention, prefill_attention_reference
from .quantized_linear import (
    quantized_embedding, quantized_embedding_reference, quantized_linear, quantized_linear_reference,
)
from .rms_norm import fused_add_rms_norm, fused_add_rms_norm_reference, rms_norm, rms_norm_reference
from .rope_cache import build_cos_sin_cache, rope_inv_freq
from .rotary_embedding import rotary_embedding, rotary_embedding_reference

__all__ = [
    "BACKENDS",
    "BackendUnsupported",
    "all_ops",
    "use_backend",
    "rms_norm",
    "rms_norm_reference",
    "fused_add_rms_norm",
    "fused_add_rms_norm_reference",
    "rotary_embedding",
    "rotary_embedding_reference",
    "rope_cache",
    "build_cos_sin_cache",
    "rope_inv_freq",
    "silu_and_mul",
    "silu_and_mul_reference",
    "gelu_and_mul",
    "gelu_and_mul_reference",
    "prefill_attention",
    "prefill_attention_reference",
    "reshape_and_cache",
    "reshape_and_cache_reference",
    "paged_decode_attention",
    "paged_decode_attention_reference",
    "linear",
    "linear_reference",
    "quantized_linear",
    "quantized_linear_reference",
    "quantized_embedding",
    "quantized_embedding_reference",
]
