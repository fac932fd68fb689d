"""Fused ops, one public function each, dispatched to the best backend for the tensors' device.

Every op has a ``*_reference`` implementation in plain torch (the specification the kernels
are tested against). ``use_backend(...)`` / ``INFERENCE_PIO_BACKEND`` force a backend.
"""

from ._dispatch import BACKENDS, BackendUnsupported, all_ops, use_backend
from .rms_norm import fused_add_rms_norm, fused_add_rms_norm_reference, rms_norm, rms_norm_reference

__all__ = [
    "BACKENDS",
    "BackendUnsupported",
    "all_ops",
    "use_backend",
    "rms_norm",
    "rms_norm_reference",
    "fused_add_rms_norm",
    "fused_add_rms_norm_reference",
]
