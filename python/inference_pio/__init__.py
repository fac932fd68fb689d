"""inference-pio: an LLM inference engine whose hot paths are compiled kernels.

``inference_pio.ops`` holds the fused ops (C++ CPU, CUDA C++ and Triton backends behind one
dispatcher); ``python -m inference_pio doctor`` reports what this installation can run.
"""

# torch first: it loads the OpenMP runtime our CPU module then shares (see _native.py).
import torch  # noqa: F401

__version__ = "0.1.0"

from . import ops  # noqa: E402
from .api import load  # noqa: E402

__all__ = ["load", "ops", "__version__"]
