"""Random ``QuantizedTensor`` weights of every supported type, for the quantized op and layer tests.

Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 are quantized from a float matrix with gguf's own quantizer. gguf
cannot quantize the K-quants (Q4_K / Q5_K / Q6_K), so those get random blocks with finite fp16 scales (every bit pattern of
the 6-bit scales, nibbles and high bits is legal), scaled so outputs stay O(1) whatever K is.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from inference_pio.quant import QuantizedTensor

QTYPES = (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K)
GGUF_QUANTIZABLE = (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)
#: The types whose int8 input mode runs the byte kernels (the rest: the int16 kernels).
INT8_INPUT_QTYPES = (Q.Q8_0, Q.Q4_0, Q.Q4_1)


def block_size(qtype) -> int:
    return GGML_QUANT_SIZES[Q(qtype)][0]


def _fp16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8).reshape(*values.shape, 2)


def random_qweight(qtype, n: int, k: int, seed: int = 0) -> QuantizedTensor:
    """A ``[n, k]`` weight whose dequantized values have magnitude ~ k**-0.5."""
    qtype = Q(qtype)
    gen = torch.Generator().manual_seed(seed)
    if qtype in GGUF_QUANTIZABLE:
        return QuantizedTensor.quantize(torch.randn(n, k, generator=gen) * k**-0.5, qtype)
    rng = np.random.default_rng(seed)
    bs, ts = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n * k // bs, ts), dtype=np.uint8)
    nblocks = blocks.shape[0]
    if qtype in (Q.Q4_K, Q.Q5_K):  # d, dmin fp16; 6-bit scales and mins up to 63, values up to 15 / 31
        top = 15 if qtype == Q.Q4_K else 31
        blocks[:, 0:2] = _fp16_bytes(rng.uniform(0.5, 1.0, nblocks) * 2 / (63 * top) * k**-0.5)
        blocks[:, 2:4] = _fp16_bytes(rng.uniform(0.5, 1.0, nblocks) * 1 / 63 * k**-0.5)
    else:  # Q6_K: d fp16 last; int8 scales up to 128, values -32..31
        blocks[:, 208:210] = _fp16_bytes(rng.uniform(0.5, 1.0, nblocks) * 2 / (128 * 32) * k**-0.5)
    return QuantizedTensor(torch.from_numpy(blocks.reshape(n, -1)), qtype, (n, k))
