"""Linear and embedding over GGUF-block weights (``inference_pio.quant.QuantizedTensor``).

``quantized_linear``: ``out [..., N] = x [..., K] @ dequant(W)[N, K].T (+ bias[N])``; x float32 /
float16 / bfloat16 with a contiguous last dimension, bias ``[N]`` in x's dtype, out in x's dtype.
``quantized_embedding``: ``out [..., hidden] = dequant(W)[ids]`` in the requested float dtype.
W's types: Q8_0, Q4_0, Q4_1, Q4_K, Q6_K (``quant.SUPPORTED_QTYPES``); others cannot even be built
into a ``QuantizedTensor`` (``UnsupportedQuantizationError``).

Three ways the linear kernel (csrc/kernels/cpu/quantized_linear.cpp) computes, chosen by
``quantize_input`` (``"none" | "int16" | "int8"``):

- ``"int16"`` (the default): x is rounded once per call to int16 blocks of 32 with a float scale
  (``d = max|x_block| / 32767``), then integer dot products per weight block (AVX512-VNNI
  ``vpdpwssd``, AVX-512BW / AVX2 ``vpmaddwd``) and one float multiply-add per block. Off from the
  exact product by the rounding of x: at most ``max|x_block| / 65534`` per element (2^-16 of the
  block's max; bf16 itself rounds at 2^-9 of the value), so greedy answers stay transformers'.
- ``"int8"`` (llama.cpp's scheme): the same with ``d = max|x_block| / 127``: the byte kernels for
  Q8_0 / Q4_0 / Q4_1 (twice the elements per instruction), the int16 kernels on int8-range inputs
  for the other types. At most ``max|x_block| / 254`` per element: enough to flip close greedy
  choices.
- ``"none"``: exact, each weight block dequantized to float32 and multiplied with x in float32
  (the float product with the dequantized weight); the slowest (float FMAs per weight element).

``quantize_input=None`` takes ``INFERENCE_PIO_QUANTIZE_INPUT`` (``none`` / ``int16`` / ``int8``;
the older ``1`` / ``0`` mean ``int8`` / ``none``), ``int16`` when unset. ``True`` / ``False`` are
accepted as ``"int8"`` / ``"none"`` (the old boolean argument).

Routing (why; the dispatcher decides, ``_dispatch.takes_torch_route``): decode (``M <=
_dispatch.QUANTIZED_LINEAR_KERNEL_MAX_ROWS`` rows) is memory-bound and the block kernel streams the
weight once. Prefill is compute-bound, and torch's blocked GEMM (AMX / AVX-512 through oneDNN)
outruns any block kernel there, so for more rows the op dequantizes tiles of weight rows (the
embedding kernel, ``DEQUANT_TILE_BYTES`` at a time, never the whole matrix) and multiplies them
with torch's matmul in x's dtype: exact products for float32 x, bf16/fp16 weights for bf16/fp16 x
(rounded as a dense bf16/fp16 checkpoint would be). That route is the exact mode's (``"none"``) only:
the integer modes keep the C++ kernel at every M, whose integer GEMM (from 10 rows,
csrc/kernels/cpu/quantized_gemm.h) outruns the tiles there (batch decode and prompts). A forced
backend (``use_backend``) bypasses the routing, so the kernel is tested at every M. Layers call
``QuantizedLinearHandle`` / ``QuantizedEmbeddingHandle``, fetched once (the same results as the ops).

Backends: ``reference`` (the gguf package's dequantizer, then a float32 matmul; float64 for
float64) and ``cpu``. Backend call conventions: ``quantized_linear: impl(x2d, qweight, bias, out2d,
quantize_input)`` (a mode name), ``quantized_embedding: impl(ids1d, qweight, out2d)``.
"""

from __future__ import annotations

import math
import os
import threading

import torch

from . import _dispatch
from ._checks import FLOAT_DTYPES, INDEX_DTYPES, check_out, check_same_device, check_same_dtype, check_tensor, rows_2d
from ._tensor import optional_view, view
from .. import _native
from ..quant import QuantizedTensor

QUANTIZE_INPUT_ENV = "INFERENCE_PIO_QUANTIZE_INPUT"
#: Input modes by name -> the C++ kernel's ``input_mode`` (cpu_ops.h ``InputMode``).
INPUT_MODES = {"none": 0, "int8": 1, "int16": 2}
DEFAULT_INPUT_MODE = "int16"
#: The largest integer of each rounding mode's blocks.
INPUT_QMAX = {"int8": 127.0, "int16": 32767.0}
#: Types whose int8 mode runs the byte kernels (ggml ids of Q4_0, Q4_1, Q8_0); the others run
#: the int16 kernels on int8-range inputs (the same rounding of x).
INT8_INPUT_QTYPES = (2, 3, 8)
Q8_BLOCK = 32

# Rows up to which the block kernel runs (the dispatcher's value); more rows go through dequantized
# tiles and torch's matmul.
SMALL_M_MAX = _dispatch.QUANTIZED_LINEAR_KERNEL_MAX_ROWS
DEQUANT_TILE_BYTES = 2 << 20

_quantized_linear = _dispatch.op("quantized_linear")
_quantized_linear.set_torch_route(kernel_max_rows=SMALL_M_MAX, needs="cpu")  # the tiles use the cpu kernels
_quantized_embedding = _dispatch.op("quantized_embedding")
_MODE_CODES = {**INPUT_MODES, False: 0, True: 1}  # the old boolean argument: int8 or exact
_ENV_ALIASES = {"0": "none", "1": "int8"}


def input_mode(value: object) -> str:
    """``quantize_input`` as a mode name: ``"none" | "int16" | "int8"``, ``True`` -> ``"int8"``,
    ``False`` -> ``"none"``, ``None`` -> ``INFERENCE_PIO_QUANTIZE_INPUT`` (``default_quantize_input``)."""
    if value is None:
        return default_quantize_input()
    if isinstance(value, bool):
        return "int8" if value else "none"
    if value not in INPUT_MODES:
        raise ValueError(f"quantize_input must be one of {sorted(INPUT_MODES)} (or a bool, or None), got {value!r}")
    return value


def input_mode_code(value: object) -> int:
    """The C++ kernels' ``input_mode`` for a mode name or the old boolean."""
    code = _MODE_CODES.get(value) if isinstance(value, (str, bool)) else None
    return INPUT_MODES[input_mode(value)] if code is None else code


def default_quantize_input() -> str:
    """``INFERENCE_PIO_QUANTIZE_INPUT``: ``none`` / ``int16`` / ``int8`` (``0`` / ``1``: ``none`` / ``int8``);
    ``int16`` when unset."""
    value = os.environ.get(QUANTIZE_INPUT_ENV, DEFAULT_INPUT_MODE)
    mode = _ENV_ALIASES.get(value, value)
    if mode not in INPUT_MODES:
        raise ValueError(f"{QUANTIZE_INPUT_ENV}={value!r} must be none, int16 or int8 (or 0 / 1: none / int8)")
    return mode


def quantize_input_reference(x: torch.Tensor, mode: str = "int8") -> torch.Tensor:
    """x (``[M, K]``, K a multiple of 32) as the ``mode`` ("int8" / "int16") kernels see it: per
    block of 32, ``d = max|x| / qmax``, ``q = round_half_even(x * (qmax / max|x|))``, value ``q * d``;
    float32 arithmetic, exactly as the kernel does it. Returned in float64."""
    qmax = INPUT_QMAX[mode]
    xf = x.float().reshape(*x.shape[:-1], x.shape[-1] // Q8_BLOCK, Q8_BLOCK)
    amax = xf.abs().amax(dim=-1, keepdim=True)
    # float32 divisions, correctly rounded (via float64: torch may multiply by a reciprocal instead).
    d = (amax.double() / qmax).float()
    inv = torch.where(amax > 0, (qmax / amax.double()).float(), torch.zeros_like(amax))
    q = torch.round(xf * inv)
    return (q.double() * d.double()).reshape(x.shape)


def input_error_bound(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Per element of x (``[..., K]``), how far ``mode`` may move it: half a quantization step,
    ``max|x_block| / (2 qmax)``, times ``1 + 2^-7`` for the float32 roundings (quantized_int16.h)."""
    if mode == "none":
        return torch.zeros_like(x, dtype=torch.float64)
    blocks = x.double().reshape(*x.shape[:-1], x.shape[-1] // Q8_BLOCK, Q8_BLOCK)
    step = blocks.abs().amax(-1, keepdim=True) / INPUT_QMAX[mode]
    return (step / 2 * (1 + 2**-7)).expand_as(blocks).reshape(x.shape)


def quantized_linear_reference(x: torch.Tensor, qweight: QuantizedTensor, bias: torch.Tensor | None = None,
                               quantize_input: str | bool = "none") -> torch.Tensor:
    """The specification: gguf's dequantized weight, ``x @ W.T (+ bias)`` in float32 (float64 for
    float64 x), rounded once to x's dtype. ``quantize_input`` ("int8" / "int16"): x first rounded
    as those kernels round it (``quantize_input_reference``)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    mode = input_mode(quantize_input)
    xs = x if mode == "none" else quantize_input_reference(x, mode)
    y = xs.to(acc) @ qweight.dequantize(acc).to(x.device).T
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype)


def quantized_embedding_reference(ids: torch.Tensor, qweight: QuantizedTensor,
                                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``dequant(W)[ids]`` (gguf's dequantizer) in ``dtype``: ``[*ids.shape, hidden]``."""
    return qweight.dequantize(torch.float32).to(ids.device)[ids.long()].to(dtype)


def _check_qweight(qweight: object, device: torch.device) -> QuantizedTensor:
    if not isinstance(qweight, QuantizedTensor):
        raise TypeError(f"qweight must be an inference_pio.quant.QuantizedTensor, got {type(qweight).__name__}")
    if qweight.device != device:
        raise ValueError(f"qweight must be on the same device as the input ({device}), got {qweight.device}")
    return qweight


def _check_linear(x: object, qweight: object, bias: object) -> int:
    """Validates the arguments; returns N."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension [..., K], got a scalar")
    qweight = _check_qweight(qweight, x.device)
    n, k = qweight.shape
    if x.shape[-1] != k:
        raise ValueError(f"x must have shape [..., K] with K = {k} (qweight is {qweight.qtype_name} {list(qweight.shape)}),"
                         f" got {list(x.shape)}")
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        check_same_dtype("bias", bias, "x", x)
        check_same_device("bias", bias, "x", x)
        if bias.shape[0] != n:
            raise ValueError(f"bias must have shape [N] = [{n}] (qweight's rows), got {list(bias.shape)}")
        if not bias.is_contiguous():
            raise ValueError(f"bias must be contiguous, got strides {bias.stride()}")
    return n


def quantized_linear(x: torch.Tensor, qweight: QuantizedTensor, bias: torch.Tensor | None = None, *,
                     out: torch.Tensor | None = None, quantize_input: str | bool | None = None) -> torch.Tensor:
    """``x [..., K] @ dequant(qweight)[N, K].T (+ bias[N])`` -> ``out [..., N]`` in x's dtype.

    ``out`` (contiguous, x's dtype) is written and returned (new unless given). ``quantize_input``:
    ``"none" | "int16" | "int8"``, see the module docstring (None: ``INFERENCE_PIO_QUANTIZE_INPUT``,
    default ``"int16"``).
    """
    n = _check_linear(x, qweight, bias)
    out = check_out(out, (*x.shape[:-1], n), x)
    x2 = rows_2d("x", x)
    out2 = out if out.dim() == 2 else out.view(x2.shape[0], n)
    quantize_input = input_mode(quantize_input)
    if _dispatch.takes_torch_route("quantized_linear", x.device, x2.shape[0], integer_inputs=quantize_input != "none"):
        quantized_linear_through_tiles(x2, qweight, bias, out2)
    else:
        _quantized_linear(x.device, x2, qweight, bias, out2, quantize_input)
    return out


_tile_workspaces = threading.local()  # one set of tile buffers per thread, shared by every layer


def _tile_buffer(name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A reused flat buffer of at least ``numel`` elements (grown, never shrunk)."""
    buffers = _tile_workspaces.__dict__.setdefault("buffers", {})
    buf = buffers.get((name, dtype))
    if buf is None or buf.numel() < numel:
        buf = buffers[(name, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel]


def _row_ids(n: int) -> torch.Tensor:
    """``arange(n)`` (int64), the prefix of a per-thread cached arange."""
    ids = getattr(_tile_workspaces, "row_ids", None)
    if ids is None or ids.numel() < n:
        ids = _tile_workspaces.row_ids = torch.arange(n, dtype=torch.int64)
    return ids[:n]


def quantized_linear_through_tiles(x2: torch.Tensor, qweight: QuantizedTensor, bias: torch.Tensor | None,
                                   out2: torch.Tensor) -> None:
    """The prefill route (CPU): ``out2 [M, N] = x2 [M, K] @ W.T (+ bias)`` with W dequantized a tile of
    rows (``DEQUANT_TILE_BYTES``) at a time into x's dtype and multiplied by torch's matmul. The tile
    buffers are per thread and shared by all layers, so no layer holds a dense piece of its weight."""
    n, k = qweight.shape
    m = x2.shape[0]
    rows = max(1, min(n, DEQUANT_TILE_BYTES // max(1, k * x2.element_size())))
    tiles = _tile_buffer("tile", rows * k, x2.dtype).view(rows, k)
    products = _tile_buffer("product", m * rows, x2.dtype)
    ids = _row_ids(n)
    module = _native.cpu_module()
    data = view(qweight.data)
    for n0 in range(0, n, rows):
        n1 = min(n, n0 + rows)
        tile = tiles[: n1 - n0]
        module.quantized_embedding(view(tile), view(ids[n0:n1]), data, qweight.qtype)
        if n1 - n0 == n:  # one tile: straight into out
            _mm_into(x2, tile, bias, out2)
        else:
            product = products[: m * (n1 - n0)].view(m, n1 - n0)  # contiguous, as mm's out wants
            _mm_into(x2, tile, None if bias is None else bias[n0:n1], product)
            out2[:, n0:n1].copy_(product)


def _mm_into(x2, tile, bias, dst):
    if bias is None:
        torch.mm(x2, tile.t(), out=dst)
    else:
        torch.addmm(bias, x2, tile.t(), out=dst)


class QuantizedLinearHandle:
    """``quantized_linear`` over one weight, bias and input mode, resolved once: what
    ``layers.QuantizedLinear`` calls per forward.

    ``handle(x, out=None)`` returns exactly what ``quantized_linear(x, qweight, bias, out=out,
    quantize_input=quantize_input)`` does. While the dispatcher's automatic routing holds and x is
    ``[M, K]`` with ``M <= QUANTIZED_LINEAR_KERNEL_MAX_ROWS``, it calls the block kernel the routing
    picks for the weight's device, with the weight's and bias's views and the mode's code made once
    (the C++ kernel still checks x, out and the bias against them, raising ValueError naming the
    argument). Every other call goes through ``quantized_linear``. ``bias`` is in the dtype of the x
    the handle is for; a ``qweight.data`` or bias replaced afterwards is seen by its data pointer.
    """

    __slots__ = ("qweight", "bias", "quantize_input", "_kernel", "_views", "_pointers", "_max_rows")

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None = None,
                 quantize_input: str | bool | None = None):
        self.qweight, self.bias = _check_qweight(qweight, qweight.device), bias
        self.quantize_input = input_mode(quantize_input)
        self._max_rows = _dispatch.op("quantized_linear").kernel_max_rows
        # Resolved on the first call the automatic route may give the kernel (never while tracing).
        self._kernel = self._views = self._pointers = None

    def _resolve(self) -> None:
        q, b = self.qweight, self.bias
        self._kernel, self._views = None, None
        self._pointers = (q.data.data_ptr(), None if b is None else b.data_ptr())
        # By name, not the module's _quantized_linear: tests replace that one.
        if _dispatch.op("quantized_linear").automatic_backend(q.device) != "cpu":
            return
        self._kernel = _native.cpu_module().quantized_linear
        self._views = (view(q.data), q.qtype, optional_view(b), INPUT_MODES[self.quantize_input])

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [M, K]`` (or ``[..., K]``) -> ``[M, N]`` in x's dtype, written into ``out`` when given."""
        if x.dim() == 2 and x.shape[0] <= self._max_rows and _dispatch.automatic():
            b = self.bias
            if (self.qweight.data.data_ptr(), None if b is None else b.data_ptr()) != self._pointers:
                self._resolve()
            if self._kernel is not None:
                if out is None:
                    out = torch.empty(x.shape[0], self.qweight.shape[0], dtype=x.dtype)
                self._kernel(view(out), view(x), *self._views)
                return out
        return quantized_linear(x, self.qweight, self.bias, out=out, quantize_input=self.quantize_input)


def quantized_embedding(ids: torch.Tensor, qweight: QuantizedTensor, dtype: torch.dtype = torch.float32, *,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """``ids [...]`` (int32/int64, each in ``[0, vocab)``) -> ``out [..., hidden]`` = rows of
    ``dequant(qweight) [vocab, hidden]`` in ``dtype`` (float32/float16/bfloat16; out's dtype when given)."""
    check_tensor("ids", ids, dtypes=INDEX_DTYPES)
    qweight = _check_qweight(qweight, ids.device)
    vocab, hidden = qweight.shape
    if out is not None:
        check_tensor("out", out, dtypes=FLOAT_DTYPES)
        dtype = out.dtype
    elif dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    out = check_out(out, (*ids.shape, hidden), torch.empty(0, dtype=dtype, device=ids.device))
    ids1 = ids.reshape(-1)
    if ids1.numel() and not ids1.is_contiguous():
        ids1 = ids1.contiguous()
    if ids1.numel() and (int(ids1.min()) < 0 or int(ids1.max()) >= vocab):
        bad = ids1[(ids1 < 0) | (ids1 >= vocab)][0].item()
        raise ValueError(f"ids must be in [0, {vocab}) (qweight's rows), got {bad}")
    _quantized_embedding(ids.device, ids1, qweight, out.view(math.prod(ids.shape), hidden))
    return out


class QuantizedEmbeddingHandle:
    """``quantized_embedding`` over one table, resolved once (``layers.QuantizedEmbedding``'s call):
    ``handle(ids, dtype, out=None)`` returns what ``quantized_embedding(ids, qweight, dtype, out=out)``
    does; while the automatic routing holds and ids are 1-D, the kernel runs with the table's view
    made once (it checks every id is in range, and shapes and dtypes, before writing: ValueError)."""

    __slots__ = ("qweight", "_kernel", "_views", "_pointer")

    def __init__(self, qweight: QuantizedTensor):
        self.qweight = _check_qweight(qweight, qweight.device)
        self._kernel = self._views = self._pointer = None  # resolved on the first automatic call

    def _resolve(self) -> None:
        q = self.qweight
        self._pointer = q.data.data_ptr()
        self._kernel, self._views = None, None
        if _dispatch.op("quantized_embedding").automatic_backend(q.device) == "cpu":
            self._kernel = _native.cpu_module().quantized_embedding
            self._views = (view(q.data), q.qtype)

    def __call__(self, ids: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
        if ids.dim() == 1 and _dispatch.automatic():
            if self.qweight.data.data_ptr() != self._pointer:
                self._resolve()
            if self._kernel is not None:
                if out is None:
                    out = torch.empty(ids.shape[0], self.qweight.shape[1], dtype=dtype)
                data, qtype = self._views
                self._kernel(view(out), view(ids), data, qtype)
                return out
        return quantized_embedding(ids, self.qweight, dtype, out=out)


# Backends. Each takes validated arguments.
@_quantized_linear.register("reference")
def _quantized_linear_ref(x, qweight, bias, out, quantize_input):
    out.copy_(quantized_linear_reference(x, qweight, bias, quantize_input))


@_quantized_linear.register("cpu")
def _quantized_linear_cpu(x, qweight, bias, out, quantize_input):
    _native.cpu_module().quantized_linear(view(out), view(x), view(qweight.data), qweight.qtype, optional_view(bias),
                                          input_mode_code(quantize_input))


@_quantized_embedding.register("reference")
def _quantized_embedding_ref(ids, qweight, out):
    out.copy_(quantized_embedding_reference(ids, qweight, out.dtype))


@_quantized_embedding.register("cpu")
def _quantized_embedding_cpu(ids, qweight, out):
    _native.cpu_module().quantized_embedding(view(out), view(ids), view(qweight.data), qweight.qtype)
# No Triton / CUDA kernels yet: on GPUs the ops run the reference (dequantize, then matmul).
