"""The decode step of a Llama-family decoder as one C++ call (``DecoderPlan``, csrc/decoder/).

At batch-1 decode a small model is hundreds of kernel calls of a few microseconds each; run from
Python (module calls, workspace lookups, tensor views, validation, dispatch) they cost about as
much as the kernels. ``FusedDecoder`` hands the C++ side views of every weight once and then runs
each decode step (embedding -> layers -> final norm -> LM head) in a single call without the GIL.

This module executes a plan it is given: the model names its modules by role in a ``DecodePlan``
(``decode_plan.py``; the shared decoder's ``decode_plan()``), and nothing here reads the model's
attribute names. Projections may be dense ``Linear``, ``QuantizedLinear`` (GGUF blocks, its
``quantize_input`` honoured) or a ``RowSplitLinear`` of those (a GGUF with mixed types per group);
the embedding dense or ``QuantizedEmbedding``. Per-layer settings (sliding window, attention scale,
norm eps, qkv bias, q/k norm when the build takes it) come from each layer's modules.

``fused_decode_step`` is the model's hook: it returns the step's logits, or None when the fused
path does not apply (not a CPU decode step, ``INFERENCE_PIO_FUSED_DECODE=0``, a forced non-cpu
backend, torch.compile tracing, or a model the plan cannot express, which is said once in a warning).
"""

from __future__ import annotations

import operator
import os
import warnings
import weakref

import torch
import torch.nn as nn

from .. import _native
from ..ops import _dispatch
from ..ops._tensor import DTYPE_CODES, view
from ..ops.paged_decode_attention import CPU_HEAD_DIM_MULTIPLE, CPU_MAX_HEAD_DIM
from ..ops.quantized_linear import input_mode_code
from .decode_plan import DecodePlan, FusedDecodeUnsupported, LayerPlan
from .linear import Linear
from .quantized import QuantizedEmbedding, QuantizedLinear
from .row_split import RowSplitLinear
from .workspace import Workspace

FUSED_DECODE_ENV = "INFERENCE_PIO_FUSED_DECODE"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_PROJECTIONS = (Linear, QuantizedLinear)


def fused_decode_enabled() -> bool:
    """False when ``INFERENCE_PIO_FUSED_DECODE=0`` (for comparisons with the per-op path)."""
    return os.environ.get(FUSED_DECODE_ENV, "1") != "0"


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise FusedDecodeUnsupported(message)


def _accepts(native_class, argument: str) -> bool:
    """Whether this build's ``native_class`` constructor takes ``argument`` (its pybind11 signature)."""
    return f"{argument}:" in (native_class.__init__.__doc__ or "")


class FusedDecoder:
    """A ``DecoderPlan`` over the weights a ``DecodePlan`` names, callable like the model on decode steps.

    Holds references to every tensor the plan reads. Weights are read once, at construction: a
    model whose weights are replaced afterwards needs a new one (``forget_fused_decoder``).
    """

    def __init__(self, source: nn.Module | DecodePlan):
        """``source``: a model with ``decode_plan()`` or the plan itself. Raises
        ``FusedDecodeUnsupported`` (a ValueError) naming the part that does not fit."""
        if isinstance(source, DecodePlan):
            plan = source
        else:
            _expect(callable(getattr(source, "decode_plan", None)),
                    f"{type(source).__name__} has no decode_plan() (the decoder builds its fused plan)")
            plan = source.decode_plan()
        embed, rotary, final_norm = plan.embed, plan.rotary, plan.final_norm
        _expect(len(plan.layers) > 0, "layers: the model has no decoder layers")
        # The activation dtype: the dense table's, or the one a quantized table is read out in.
        dtype = embed.dtype if isinstance(embed, QuantizedEmbedding) else embed.weight.dtype
        _expect(dtype in _DTYPES, f"embed_tokens: dtype must be float32, float16 or bfloat16, got {dtype}")
        self.dtype = dtype
        first = plan.layers[0].attention
        heads, kv_heads, head_dim = first.num_heads, first.num_kv_heads, first.head_dim
        _expect(head_dim % CPU_HEAD_DIM_MULTIPLE == 0 and head_dim <= CPU_MAX_HEAD_DIM,
                f"head_dim {head_dim}: the CPU decode attention needs a multiple of {CPU_HEAD_DIM_MULTIPLE} "
                f"up to {CPU_MAX_HEAD_DIM}")
        _expect(rotary.head_dim == head_dim, f"rotary.head_dim {rotary.head_dim} differs from the attention's {head_dim}")
        self._tensors: list[torch.Tensor] = []  # everything the plan points into, kept alive here
        native = _native.cpu_module()
        plan_layers = []
        for layer in plan.layers:
            attn = layer.attention
            _expect((attn.num_heads, attn.num_kv_heads, attn.head_dim) == (heads, kv_heads, head_dim),
                    f"{layer.name('attention')}: heads {attn.num_heads}/{attn.num_kv_heads}/{attn.head_dim} differ "
                    f"from layer 0's {heads}/{kv_heads}/{head_dim}")
            in_norm, post_norm = layer.input_norm, layer.post_norm
            plan_layers.append(native.PlanLayer(
                self._view(in_norm.weight, layer.name("input_norm") + ".weight"), in_norm.eps,
                self._projection(native, layer.qkv, layer.name("qkv")),
                self._projection(native, layer.o_proj, layer.name("o_proj")),
                self._view(post_norm.weight, layer.name("post_norm") + ".weight"), post_norm.eps,
                self._projection(native, layer.gate_up, layer.name("gate_up")),
                self._projection(native, layer.down, layer.name("down")),
                attn.scale, attn.sliding_window, **self._qk_norm_kwargs(native, layer)))
        try:
            self._plan = native.DecoderPlan(
                DTYPE_CODES[dtype], heads, kv_heads, head_dim, rotary.is_neox,
                self._weight(native, embed, "embed_tokens"), plan_layers,
                self._view(final_norm.weight, "norm.weight"), final_norm.eps,
                self._projection(native, plan.lm_head, "lm_head"),
                self._view(rotary.cos_sin_cache, "rotary.cos_sin_cache"))  # its width is the rotary dims
        except ValueError as e:  # a shape or dtype that does not fit, named by the C++ checks
            raise FusedDecodeUnsupported(str(e)) from None
        self.vocab_size = self._plan.vocab_size
        self._workspace = Workspace("cpu")
        self._key_caches: list[torch.Tensor] = []
        self._value_caches: list[torch.Tensor] = []

    def _qk_norm_kwargs(self, native, layer: LayerPlan) -> dict:
        """Per-head q/k RMSNorm weights (Qwen3), when the layer has them and this build's plan takes them."""
        if layer.q_norm is None and layer.k_norm is None:
            return {}
        _expect(layer.q_norm is not None and layer.k_norm is not None,
                f"{layer.prefix}self_attn: q_norm and k_norm come together (one of them is missing)")
        _expect(layer.q_norm.eps == layer.k_norm.eps,
                f"{layer.prefix}self_attn: q_norm eps {layer.q_norm.eps} differs from k_norm's {layer.k_norm.eps}")
        _expect(_accepts(native.PlanLayer, "q_norm"),
                f"{layer.name('q_norm')}: this build's fused decode step has no q/k RMSNorm")
        return dict(q_norm=self._view(layer.q_norm.weight, layer.name("q_norm") + ".weight"),
                    k_norm=self._view(layer.k_norm.weight, layer.name("k_norm") + ".weight"),
                    qk_norm_eps=layer.q_norm.eps)

    def _view(self, t: torch.Tensor, name: str) -> tuple:
        _expect(isinstance(t, torch.Tensor), f"{name} must be a tensor, got {type(t).__name__}")
        _expect(t.device.type == "cpu", f"{name} is on {t.device}: the fused decode step runs on CPU")
        _expect(t.dtype in DTYPE_CODES, f"{name}: unsupported dtype {t.dtype}")
        self._tensors.append(t)
        return view(t)

    def _projection(self, native, module: nn.Module, name: str):
        """The ``PlanWeight`` of a ``Linear`` / ``QuantizedLinear``, or of a ``RowSplitLinear`` whose
        ``parts`` (``Linear`` / ``QuantizedLinear``) compute consecutive slices of its output, as a
        fused qkv loaded from a GGUF with mixed types is kept."""
        if isinstance(module, RowSplitLinear):
            for j, part in enumerate(module.parts):
                _expect(isinstance(part, _PROJECTIONS),
                        f"{name}.parts.{j} must be a Linear or QuantizedLinear, got {type(part).__name__}")
            return native.PlanWeight.concat([self._weight(native, part, f"{name}.parts.{j}")
                                             for j, part in enumerate(module.parts)])
        _expect(isinstance(module, _PROJECTIONS),
                f"{name} must be a Linear, a QuantizedLinear or a row-split module of them, got {type(module).__name__}")
        return self._weight(native, module, name)

    def _weight(self, native, module: nn.Module, name: str):
        """``PlanWeight`` of a ``Linear``, ``QuantizedLinear``, ``nn.Embedding`` or ``QuantizedEmbedding``."""
        bias = getattr(module, "bias", None)
        if bias is not None:
            bias = self._view(bias if bias.dtype == self.dtype else bias.detach().to(self.dtype), name + ".bias")
        qweight = getattr(module, "qweight", None)
        if isinstance(module, (QuantizedLinear, QuantizedEmbedding)):
            return native.PlanWeight.quantized(self._view(qweight.data, name + ".qweight"), qweight.qtype,
                                               qweight.shape[1], bias,
                                               input_mode_code(getattr(module, "quantize_input", "none")))
        return native.PlanWeight.dense(self._view(module.weight, name + ".weight"), bias)

    def _bind_caches(self, key_caches, value_caches) -> None:
        """Hands the plan the per-layer caches when they are not the ones it already holds."""
        if (len(key_caches) == len(self._key_caches) and all(map(operator.is_, key_caches, self._key_caches))
                and all(map(operator.is_, value_caches, self._value_caches))):
            return
        for name, caches in (("key_caches", key_caches), ("value_caches", value_caches)):
            for i, c in enumerate(caches):
                if not isinstance(c, torch.Tensor) or c.device.type != "cpu":
                    raise ValueError(f"{name}[{i}] must be a CPU tensor, got {getattr(c, 'device', type(c).__name__)}")
        self._plan.set_kv_caches([view(c) for c in key_caches], [view(c) for c in value_caches])
        self._key_caches, self._value_caches = list(key_caches), list(value_caches)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, meta, key_caches, value_caches) -> torch.Tensor:
        """One decode step: ``input_ids``/``positions`` ``[T]`` (one token per sequence, batch order),
        ``meta`` its ``AttentionMetadata`` (``meta.is_decode``), the per-layer caches. Returns logits
        ``[T, vocab]`` in the model dtype, a view of a buffer the next step overwrites (as the model's)."""
        if not meta.is_decode:
            raise ValueError("the fused decode step needs a decode step (one new token per sequence)")
        self._bind_caches(key_caches, value_caches)
        logits = self._workspace.get("logits", input_ids.shape[0], self.vocab_size, self.dtype)
        self._plan.run(view(input_ids), view(positions), view(meta.slot_mapping), view(meta.block_tables),
                       view(meta.context_lens), meta.max_seqlen_k, view(logits))
        return logits


# model -> its FusedDecoder, or the reason it has none. Weakly keyed: the entry goes with the model,
# and copies of a model (copy.deepcopy) build their own plan instead of sharing this one's views.
_decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused_decoder_of(model: nn.Module) -> FusedDecoder | None:
    """The ``FusedDecoder`` ``model``'s decode steps have been running through, if any."""
    decoder = _decoders.get(model)
    return decoder if isinstance(decoder, FusedDecoder) else None


def forget_fused_decoder(model: nn.Module) -> None:
    """Drops ``model``'s plan (after its weights were replaced); the next decode step builds a new one."""
    _decoders.pop(model, None)


def fused_decode_step(model: nn.Module, input_ids: torch.Tensor, positions: torch.Tensor, meta,
                      key_caches, value_caches) -> torch.Tensor | None:
    """The step's logits through ``model``'s ``FusedDecoder`` (built on first use), or None when the
    fused path does not apply and the caller runs its per-op forward."""
    if not (meta.is_decode and fused_decode_enabled() and _dispatch.cpu_kernels_may_run(input_ids.device)):
        return None
    decoder = _decoders.get(model)
    if decoder is None:
        try:
            decoder = FusedDecoder(model)
        except FusedDecodeUnsupported as e:
            warnings.warn(f"fused decode step unavailable for {type(model).__name__} ({e}); "
                          "decoding through the per-op path", stacklevel=2)
            decoder = str(e)
        _decoders[model] = decoder
    if not isinstance(decoder, FusedDecoder):
        return None
    return decoder(input_ids, positions, meta, key_caches, value_caches)
