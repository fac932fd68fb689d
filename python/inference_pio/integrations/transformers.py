"""One call that makes a loaded transformers Llama-layout model (Llama, Mistral, Qwen2, ...) run on our kernels.

In the manner of Liger-Kernel's ``apply_liger_kernel_to_llama``::

    from inference_pio.integrations.transformers import apply_inference_pio

    patch = apply_inference_pio(model)   # rms_norm, rope, swiglu, attention, linear
    model.generate(...)
    patch.revert()                        # or revert_inference_pio(model)

What each option swaps:

- ``rms_norm``: each ``<Model>RMSNorm``'s forward -> ``ops.rms_norm``.
- ``rope``: the modeling module's ``apply_rotary_pos_emb`` -> ``ops.rotary_embedding`` in place on
  q/k, with the cos/sin transformers computed as the per-token cache. That function is a module
  global, so it changes for every model of the architecture in the process (as Liger's does); it
  is restored when the last patched model of that architecture is reverted.
- ``swiglu``: each ``<Model>MLP``'s forward -> gate and up projections side by side in
  one buffer, ``ops.silu_and_mul``, down projection.
- ``linear``: the MLP's and attention's projections and the LM head go through
  ``layers.Linear``, whose CPU kernel streams the weight once for decode-sized inputs (torch's
  matmul otherwise).
- ``attention``: ``config._attn_implementation = "inference_pio"``, registered in transformers'
  ``AttentionInterface``: ``ops.prefill_attention`` (causal, GQA, sliding window). Its mask
  function lets causal steps without padding skip the mask; padded batches get transformers'
  boolean mask and run through its SDPA function.

Every patched piece steps aside to transformers' own code for what the kernels do not cover:
autograd recording (training; ``generate`` and ``torch.no_grad`` run the kernels), dtypes other
than float32/float16/bfloat16, ``torch.compile`` tracing, mixed weight/activation dtypes. So the
patch changes speed, not results (within float rounding). Modules whose ``forward`` someone else
already replaced (accelerate's offload hooks) are left alone.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import torch
import torch.nn as nn

from .. import ops
from ..layers import Linear

ATTENTION_NAME = "inference_pio"
OPTIONS = ("rms_norm", "rope", "swiglu", "linear", "attention")
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_PATCH_ATTR = "_inference_pio_patch"


# ----- which transformers models: the installed plugins' model types in the Llama layout -----

# What the patch replaces, by attribute name in transformers' modeling classes' __init__.
_LLAMA_LAYOUT = {"MLP": ("gate_proj", "up_proj", "down_proj"), "Attention": ("q_proj", "k_proj", "v_proj", "o_proj")}


def _modeling_module(model_type: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    except ImportError:
        return None


def _llama_layout_prefix(model_type: str, architectures: tuple[str, ...]) -> str | None:
    """The class-name prefix (``"Qwen2"``) of ``model_type``'s transformers modeling module when its
    classes have the layout the patch replaces: ``<P>RMSNorm``, ``<P>MLP`` with separate gate, up and
    down projections, ``<P>Attention`` with separate q/k/v/o projections, ``apply_rotary_pos_emb``.
    Fused projections (Phi-3) or latent attention (DeepSeek) do not qualify."""
    modeling = _modeling_module(model_type)
    if modeling is None or not hasattr(modeling, "apply_rotary_pos_emb"):
        return None
    for architecture in architectures:
        prefix = architecture.removesuffix("ForCausalLM")
        if prefix == architecture or not isinstance(getattr(modeling, f"{prefix}RMSNorm", None), type):
            continue
        if all(set(names) <= _init_names(getattr(modeling, f"{prefix}{part}", None))
               for part, names in _LLAMA_LAYOUT.items()):
            return prefix
    return None


def _init_names(cls: object) -> set[str]:
    """The names ``cls.__init__`` uses (``self.gate_proj = ...`` names ``gate_proj``), looking through
    one decorator that wraps it without ``functools.wraps`` (transformers' kernel hooks do)."""
    init = getattr(cls, "__init__", None) if isinstance(cls, type) else None
    code = getattr(init, "__code__", None)
    if code is None:
        return set()
    names = set(code.co_names)
    for cell in init.__closure__ or ():
        inner = getattr(cell.cell_contents, "__code__", None)
        if inner is not None:
            names |= set(inner.co_names)
    return names


def _plugin_model_types() -> dict[str, tuple[str, ...]]:
    """model_type -> architectures, for every installed plugin that generates text."""
    from ..plugin.families import installed_manager

    served: dict[str, tuple[str, ...]] = {}
    for family in installed_manager().families().values():
        if family.generates:
            for model_type in family.model_types:
                served.setdefault(model_type, family.architectures)
    return served


def supported_model_types() -> dict[str, str]:
    """model_type -> transformers class-name prefix for each model type an installed plugin serves
    whose transformers classes have the Llama layout (imports those modeling modules)."""
    found = {mt: _llama_layout_prefix(mt, archs) for mt, archs in _plugin_model_types().items()}
    return {mt: found[mt] for mt in sorted(found) if found[mt] is not None}


def _supported_prefix(model_type: object) -> str | None:
    if not isinstance(model_type, str):
        return None
    architectures = _plugin_model_types().get(model_type)
    return None if architectures is None else _llama_layout_prefix(model_type, architectures)


def _kernels_apply(*tensors: torch.Tensor | None) -> bool:
    """Our (non-differentiable) kernels can stand in for transformers' code on these tensors."""
    present = [t for t in tensors if t is not None]
    first = present[0]
    return (
        not torch.compiler.is_compiling()
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in present))
        and first.device.type in ("cpu", "cuda")
        and all(t.dtype == first.dtype and t.device == first.device for t in present)
        and first.dtype in _KERNEL_DTYPES
    )


# ----- RMSNorm, gated MLP, linear: per-module forwards -----

def _rms_norm_forward(module: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    if _kernels_apply(hidden_states, module.weight) and hidden_states.is_contiguous():
        return ops.rms_norm(hidden_states, module.weight, module.variance_epsilon)
    return type(module).forward(module, hidden_states)


def _sharing_linear(m: nn.Linear) -> Linear:
    """A ``layers.Linear`` over ``m``'s own parameters (no copy; a later ``.to()`` of ``m`` follows)."""
    ours = Linear(m.in_features, m.out_features, m.bias is not None, m.weight.dtype, device="meta")
    ours.weight = m.weight
    if m.bias is not None:
        ours.bias = m.bias
    return ours


def _linear_forward(module: nn.Linear, ours: Linear, x: torch.Tensor) -> torch.Tensor:
    if _kernels_apply(x, module.weight, module.bias) and x.shape[-1] == module.in_features:
        y = ours(x.reshape(-1, module.in_features))
        return y.view(*x.shape[:-1], module.out_features)
    return nn.Linear.forward(module, x)


def _swiglu_forward(module: nn.Module, gate: Linear, up: Linear, down: Linear, x: torch.Tensor) -> torch.Tensor:
    """``down(silu(gate(x)) * up(x))``; gate and up side by side in one ``[M, 2 * inter]`` buffer, as
    ``silu_and_mul`` reads them (``layers.Linear`` writes only contiguous outputs, so not in place)."""
    if not _kernels_apply(x, module.gate_proj.weight, module.up_proj.weight, module.down_proj.weight):
        return type(module).forward(module, x)
    x2 = x.reshape(-1, x.shape[-1])
    gate_up = torch.cat((gate(x2), up(x2)), dim=-1)
    return down(ops.silu_and_mul(gate_up)).view(*x.shape[:-1], -1)


# ----- rotary embedding: the modeling module's function -----

def _rotary(original: Callable, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``apply_rotary_pos_emb`` (NeoX halves) through ``ops.rotary_embedding``.

    q ``[B, H, S, D]`` / k ``[B, KVH, S, D]`` (``unsqueeze_dim=1``) or ``[B, S, H, D]`` (2); cos/sin
    ``[B or 1, S, D]`` hold each angle twice (``cat(freqs, freqs)``), so their first halves make the
    per-token ``[B*S, D]`` cos/sin cache the op reads at positions ``0..B*S-1``. Rotates in place
    (on a contiguous copy when the layout needs one) and returns q and k in their given layout.
    """
    if (unsqueeze_dim not in (1, 2) or q.dim() != 4 or cos.dim() != 3 or cos.shape[-1] != q.shape[-1]
            or q.shape[-1] % 2 or not _kernels_apply(q, k, cos, sin)):
        return original(q, k, cos, sin, unsqueeze_dim)
    token_major = (lambda t: t.transpose(1, 2)) if unsqueeze_dim == 1 else (lambda t: t)
    qt, kt = token_major(q).contiguous(), token_major(k).contiguous()  # [B, S, heads, D], no copy usually
    b, s, _, d = qt.shape
    half = d // 2
    cache = torch.cat((cos[..., :half], sin[..., :half]), dim=-1).expand(b, s, d).reshape(b * s, d)
    positions = torch.arange(b * s, device=q.device)
    ops.rotary_embedding(positions, qt.view(b * s, -1), kt.view(b * s, -1), d, cache.contiguous(), True)
    return token_major(qt), token_major(kt)


# One replacement per modeling module, shared by the models patched in it: (original, users).
_rope_patches: dict[str, tuple[Callable, set[int]]] = {}


def _patch_rope(modeling: ModuleType, model_id: int) -> None:
    name = modeling.__name__
    if name not in _rope_patches:
        original = modeling.apply_rotary_pos_emb
        modeling.apply_rotary_pos_emb = functools.wraps(original)(functools.partial(_rotary, original))
        _rope_patches[name] = (original, set())
    _rope_patches[name][1].add(model_id)


def _unpatch_rope(modeling: ModuleType, model_id: int) -> None:
    original, users = _rope_patches[modeling.__name__]
    users.discard(model_id)
    if not users:
        modeling.apply_rotary_pos_emb = original
        del _rope_patches[modeling.__name__]


# ----- attention through transformers' registry -----

def _causal_mask(q_len: int, k_len: int, window: int | None, device: torch.device) -> torch.Tensor:
    """Bottom-right aligned causal (+ window) boolean mask ``[1, 1, q_len, k_len]`` (True = attend)."""
    pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    j = torch.arange(k_len, device=device)[None, :]
    visible = j <= pos
    if window is not None:
        visible &= j > pos - window
    return visible[None, None]


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
               sliding_window: int | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature over ``ops.prefill_attention``.

    query ``[B, H, Sq, D]``, key/value ``[B, KVH, Sk, D]``, the queries being the last ``Sq`` of the
    ``Sk`` positions. Each (batch row, kv head) becomes one packed sequence with one kv head and
    its ``H / KVH`` query heads, so the ``[B, KVH, Sk, D]`` cache is read in place, uncopied.
    Returns ``[B, Sq, H, D]`` and no attention weights.
    """
    b, h, sq, d = query.shape
    kvh, sk = key.shape[1], key.shape[2]
    if (attention_mask is not None or dropout or sk < sq or kwargs.get("softcap") is not None
            or kwargs.get("output_attentions") or not kwargs.get("is_causal", getattr(module, "is_causal", True))
            or not _kernels_apply(query, key, value)):
        return _sdpa_fallback(module, query, key, value, attention_mask, scaling, dropout, sliding_window, **kwargs)
    g = h // kvh
    q = query.reshape(b, kvh, g, sq, d).transpose(2, 3).reshape(b * kvh * sq, g, d)
    k, v = key.reshape(b * kvh * sk, 1, d), value.reshape(b * kvh * sk, 1, d)
    seqs = torch.arange(b * kvh + 1, dtype=torch.int32, device=query.device)
    out = ops.prefill_attention(q, k, v, seqs * sq, seqs * sk, True, scaling, sliding_window,
                                max_seqlen_q=sq, max_seqlen_k=sk)
    return out.view(b, kvh, sq, g, d).permute(0, 2, 1, 3, 4).reshape(b, sq, h, d), None


def _sdpa_fallback(module, query, key, value, attention_mask, scaling, dropout, sliding_window, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None:  # our mask function skipped it: spell out what the kernel would apply
        attention_mask = _causal_mask(query.shape[2], key.shape[2], sliding_window, query.device)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def _attention_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                    attention_mask: torch.Tensor | None = None, allow_is_causal_skip: bool = False, **kwargs):
    """Mask function for ``"inference_pio"``: None where the kernel's own causal + window masking is
    exact (transformers allows the skip, no padding, queries end where the keys end), else SDPA's mask."""
    from transformers.masking_utils import sdpa_mask

    if (allow_is_causal_skip and isinstance(q_offset, int) and isinstance(kv_offset, int)
            and q_offset + q_length == kv_offset + kv_length
            and (attention_mask is None or bool(attention_mask.all()))):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, allow_is_causal_skip=False, **kwargs)


@functools.cache
def register_attention() -> str:
    """Registers ``"inference_pio"`` with transformers' attention and mask interfaces; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, _attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _attention_mask)
    return ATTENTION_NAME


# ----- applying and reverting -----

@dataclass
class InferencePioPatch:
    """What ``apply_inference_pio`` changed on one model; ``revert()`` undoes all of it."""

    model: nn.Module
    modeling: ModuleType
    applied: set[str] = field(default_factory=set)
    patched_modules: list[nn.Module] = field(default_factory=list)
    skipped_modules: list[str] = field(default_factory=list)
    previous_attention: str | None = None

    def _set_forward(self, name: str, module: nn.Module, forward: Callable) -> None:
        if "forward" in module.__dict__:  # someone else's wrapper (accelerate hooks): not ours to replace
            self.skipped_modules.append(name)
            return
        module.forward = forward
        self.patched_modules.append(module)

    def revert(self) -> None:
        """Restores every forward, the rotary function (when no other patched model uses it) and
        the attention implementation. Calling it again does nothing."""
        for module in self.patched_modules:
            module.__dict__.pop("forward", None)
        self.patched_modules.clear()
        if "rope" in self.applied:
            _unpatch_rope(self.modeling, id(self.model))
        if "attention" in self.applied:
            self.model.set_attn_implementation(self.previous_attention)
        self.applied.clear()
        self.model.__dict__.pop(_PATCH_ATTR, None)


def apply_inference_pio(model: nn.Module, *, rms_norm: bool = True, rope: bool = True, swiglu: bool = True,
                        linear: bool = True, attention: bool = True) -> InferencePioPatch:
    """Makes an already loaded transformers model use inference-pio's kernels.

    Served: the model types of the installed plugins whose transformers classes have the Llama
    layout (``supported_model_types()``: llama, mistral, qwen2 and the like).

    Returns the patch (``patch.revert()`` undoes it). Applying again to a patched model adds the
    options not applied yet and returns the same patch. Raises ``ValueError`` for other architectures.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    prefix = _supported_prefix(model_type)
    if prefix is None:
        raise ValueError(f"apply_inference_pio supports transformers models of type "
                         f"{', '.join(supported_model_types())} (the installed plugins' model types in the Llama "
                         f"layout); got {type(model).__name__} (model_type {model_type!r})")
    if swiglu and config.hidden_act not in ("silu", "swish"):
        raise ValueError(f"swiglu=True needs a SiLU MLP; this model's hidden_act is {config.hidden_act!r}")
    patch = model.__dict__.get(_PATCH_ATTR)
    if patch is None:
        modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
        patch = InferencePioPatch(model, modeling)
        model.__dict__[_PATCH_ATTR] = patch
    wanted = {name for name, on in zip(OPTIONS, (rms_norm, rope, swiglu, linear, attention)) if on}
    for option in [o for o in OPTIONS if o in wanted - patch.applied]:
        _APPLY[option](patch, prefix)
        patch.applied.add(option)
    return patch


def revert_inference_pio(model: nn.Module) -> None:
    """Undoes ``apply_inference_pio`` on ``model`` (nothing happens if it is not patched)."""
    patch = model.__dict__.get(_PATCH_ATTR)
    if patch is not None:
        patch.revert()


def _apply_rms_norm(patch: InferencePioPatch, prefix: str) -> None:
    norm_class = getattr(patch.modeling, f"{prefix}RMSNorm")
    for name, m in patch.model.named_modules():
        if type(m) is norm_class:
            patch._set_forward(name, m, functools.partial(_rms_norm_forward, m))


def _apply_swiglu(patch: InferencePioPatch, prefix: str) -> None:
    mlp_class = getattr(patch.modeling, f"{prefix}MLP")
    for name, m in patch.model.named_modules():
        if type(m) is mlp_class:
            projections = [_sharing_linear(p) for p in (m.gate_proj, m.up_proj, m.down_proj)]
            patch._set_forward(name, m, functools.partial(_swiglu_forward, m, *projections))


def _apply_linear(patch: InferencePioPatch, prefix: str) -> None:
    for name, m in patch.model.named_modules():
        if type(m) is nn.Linear:
            patch._set_forward(name, m, functools.partial(_linear_forward, m, _sharing_linear(m)))


def _apply_rope(patch: InferencePioPatch, prefix: str) -> None:
    _patch_rope(patch.modeling, id(patch.model))


def _apply_attention(patch: InferencePioPatch, prefix: str) -> None:
    patch.previous_attention = patch.model.config._attn_implementation
    patch.model.set_attn_implementation(register_attention())


_APPLY: dict[str, Callable[[InferencePioPatch, str], None]] = {
    "rms_norm": _apply_rms_norm, "rope": _apply_rope, "swiglu": _apply_swiglu, "linear": _apply_linear,
    "attention": _apply_attention,
}
