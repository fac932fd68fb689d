"""The fused decode step's C++ (``DecoderPlan``, csrc/decoder/) built straight from random weights,
against a float64 torch reference of the same decoder step: the per-head q/k RMSNorm (Qwen3) and
partial rotary (Phi-3 style ``rotary_dim < head_dim``) paths, with GQA and head dims 64/80/96/128.

Every previous key/value lives in a NaN-poisoned paged cache through shuffled block tables, and
the logits buffer is NaN before the call: anything read past a context or left unwritten shows.
The keys/values the step writes for its own token are checked too (they went through the norms
and RoPE before the cache).
"""

from __future__ import annotations

import pytest
import torch

from inference_pio import _native
from inference_pio.ops._tensor import DTYPE_CODES, view
from inference_pio.ops.rope_cache import build_cos_sin_cache
from tests.ops.paged_cache import random_block_tables, slot_mapping

BLOCK = 16
HIDDEN, INTERMEDIATE, VOCAB, LAYERS = 72, 88, 101, 2
EPS = 1e-5


def rms64(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope64(x: torch.Tensor, cos_sin: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """NeoX RoPE on the first ``cos_sin.shape[1]`` dims of ``x [T, heads, D]``; the rest passes."""
    rot = cos_sin.shape[1]
    cos, sin = cos_sin[positions, : rot // 2][:, None], cos_sin[positions, rot // 2:][:, None]
    x1, x2, rest = x[..., : rot // 2], x[..., rot // 2: rot], x[..., rot:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)


class Decoder:
    """Random weights of a small decoder in ``dtype`` and the plan over them (views: kept alive here)."""

    def __init__(self, heads, kv_heads, head_dim, rotary_dim, dtype, qk_norm=(True, True), bias=False):
        g = torch.Generator().manual_seed(heads * 1000 + head_dim + rotary_dim)

        def rnd(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g) * scale).to(dtype)

        self.H, self.KVH, self.D, self.dtype = heads, kv_heads, head_dim, dtype
        qkv_n = (heads + 2 * kv_heads) * head_dim
        self.embed = rnd(VOCAB, HIDDEN)
        self.layers = []
        for _ in range(LAYERS):
            layer = {
                "in": 1 + rnd(HIDDEN, scale=0.1), "post": 1 + rnd(HIDDEN, scale=0.1),
                "qkv": rnd(qkv_n, HIDDEN, scale=HIDDEN ** -0.5), "o": rnd(HIDDEN, heads * head_dim, scale=0.1),
                "gate_up": rnd(2 * INTERMEDIATE, HIDDEN, scale=HIDDEN ** -0.5),
                "down": rnd(HIDDEN, INTERMEDIATE, scale=INTERMEDIATE ** -0.5),
                "qkv_bias": rnd(qkv_n, scale=0.5) if bias else None,
                # Norm weights far from 1, so a norm that is skipped or applied to the wrong head shows.
                "q_norm": (0.5 + rnd(head_dim).abs()) if qk_norm[0] else None,
                "k_norm": (0.5 + rnd(head_dim).abs()) if qk_norm[1] else None,
            }
            self.layers.append(layer)
        self.final = 1 + rnd(HIDDEN, scale=0.1)
        self.lm_head = rnd(VOCAB, HIDDEN, scale=HIDDEN ** -0.5)
        self.cos_sin = build_cos_sin_cache(rotary_dim, 256, 10000.0)
        native = _native.cpu_module()
        self._keep = []

        def v(t):
            self._keep.append(t)
            return view(t)

        def dense(w, b=None):
            return native.PlanWeight.dense(v(w), None if b is None else v(b))

        plan_layers = []
        for L in self.layers:
            kwargs = {}
            if L["q_norm"] is not None:
                kwargs.update(q_norm=v(L["q_norm"]), qk_norm_eps=EPS / 2)
            if L["k_norm"] is not None:
                kwargs.update(k_norm=v(L["k_norm"]), qk_norm_eps=EPS / 2)
            plan_layers.append(native.PlanLayer(
                v(L["in"]), EPS, dense(L["qkv"], L["qkv_bias"]), dense(L["o"]), v(L["post"]), EPS,
                dense(L["gate_up"]), dense(L["down"]), head_dim ** -0.5, None, **kwargs))
        self.plan = native.DecoderPlan(DTYPE_CODES[dtype], heads, kv_heads, head_dim, True, dense(self.embed),
                                       plan_layers, v(self.final), EPS, dense(self.lm_head), v(self.cos_sin),
                                       rotary_dim=rotary_dim)

    def reference(self, ids, positions, caches64, tables, lens):
        """float64 logits [T, vocab] and each layer's new (key, value) [T, KVH, D] of the step."""
        H, KVH, D = self.H, self.KVH, self.D
        x = self.embed.double()[ids]
        written = []
        for L, (kc, vc) in zip(self.layers, caches64):
            h = rms64(x, L["in"].double(), EPS)
            qkv = h @ L["qkv"].double().T
            if L["qkv_bias"] is not None:
                qkv = qkv + L["qkv_bias"].double()
            q = qkv[:, : H * D].view(-1, H, D)
            k = qkv[:, H * D: (H + KVH) * D].view(-1, KVH, D)
            val = qkv[:, (H + KVH) * D:].view(-1, KVH, D)
            if L["q_norm"] is not None:
                q = rms64(q, L["q_norm"].double(), EPS / 2)
            if L["k_norm"] is not None:
                k = rms64(k, L["k_norm"].double(), EPS / 2)
            q, k = rope64(q, self.cos_sin.double(), positions), rope64(k, self.cos_sin.double(), positions)
            written.append((k, val))
            out = torch.empty(len(ids), H, D, dtype=torch.float64)
            for t in range(len(ids)):
                n = int(lens[t])
                slots = slot_mapping(tables, [t] * n, range(n), BLOCK)
                keys = kc.view(-1, KVH, D)[slots].clone()
                values = vc.view(-1, KVH, D)[slots].clone()
                keys[-1], values[-1] = k[t], val[t]  # this step's own token
                keys = keys.repeat_interleave(H // KVH, dim=1)
                values = values.repeat_interleave(H // KVH, dim=1)
                scores = torch.einsum("hd,nhd->hn", q[t], keys) * D ** -0.5
                out[t] = torch.einsum("hn,nhd->hd", scores.softmax(-1), values)
            x = x + out.reshape(len(ids), -1) @ L["o"].double().T
            gu = rms64(x, L["post"].double(), EPS) @ L["gate_up"].double().T
            gate, up = gu[:, :INTERMEDIATE], gu[:, INTERMEDIATE:]
            x = x + (torch.nn.functional.silu(gate) * up) @ L["down"].double().T
        return rms64(x, self.final.double(), EPS) @ self.lm_head.double().T, written


def run_step(decoder: Decoder, context_lens=(1, 17, 40)):
    """One decode step of len(context_lens) sequences whose last token is the step's; returns
    (logits, reference logits, written keys/values per layer, their references)."""
    dtype, KVH, D = decoder.dtype, decoder.KVH, decoder.D
    torch.manual_seed(7)
    tables, num_blocks = random_block_tables(context_lens, BLOCK, device="cpu")
    caches = []
    for _ in range(LAYERS):
        kc = torch.full((num_blocks, BLOCK, KVH, D), float("nan"), dtype=dtype)
        vc = torch.full_like(kc, float("nan"))
        for s, n in enumerate(context_lens):
            slots = slot_mapping(tables, [s] * (n - 1), range(n - 1), BLOCK)  # earlier tokens only
            kc.view(-1, KVH, D)[slots] = torch.randn(n - 1, KVH, D).to(dtype)
            vc.view(-1, KVH, D)[slots] = torch.randn(n - 1, KVH, D).to(dtype)
        caches.append((kc, vc))
    caches64 = [(kc.double(), vc.double()) for kc, vc in caches]
    T = len(context_lens)
    ids = torch.randint(0, VOCAB, (T,))
    positions = torch.tensor([n - 1 for n in context_lens])
    slots = slot_mapping(tables, range(T), positions, BLOCK)
    lens = torch.tensor(context_lens, dtype=torch.int32)
    decoder.plan.set_kv_caches([view(k) for k, _ in caches], [view(v) for _, v in caches])
    logits = torch.full((T, VOCAB), float("nan"), dtype=dtype)
    decoder.plan.run(view(ids), view(positions), view(slots), view(tables), view(lens), max(context_lens), view(logits))
    expected, written64 = decoder.reference(ids, positions, caches64, tables, lens)
    written = [(kc.view(-1, KVH, D)[slots], vc.view(-1, KVH, D)[slots]) for kc, vc in caches]
    return logits, expected, written, written64


SHAPES = [  # (heads, kv_heads, head_dim, rotary_dim)
    (4, 2, 64, 64),
    (5, 1, 80, 80),
    (6, 2, 96, 64),    # partial rotary, GQA 3:1
    (2, 2, 128, 96),   # partial rotary (Phi-4-mini's 0.75), no GQA
    (4, 1, 80, 40),    # partial rotary by half
]


def check(decoder: Decoder, rtol: float, atol_scale: float):
    logits, expected, written, written64 = run_step(decoder)
    assert not logits.isnan().any(), "the step left logits unwritten"
    scale = expected.abs().max().item()
    torch.testing.assert_close(logits.double(), expected, rtol=rtol, atol=atol_scale * scale)
    for layer, ((k, v), (k64, v64)) in enumerate(zip(written, written64)):
        torch.testing.assert_close(k.double(), k64, rtol=rtol, atol=atol_scale * 4, msg=f"layer {layer} keys")
        torch.testing.assert_close(v.double(), v64, rtol=rtol, atol=atol_scale * 4, msg=f"layer {layer} values")


@pytest.mark.parametrize("heads, kv_heads, head_dim, rotary_dim", SHAPES)
def test_float32_step_with_qk_norm_and_partial_rotary_matches_float64(heads, kv_heads, head_dim, rotary_dim):
    check(Decoder(heads, kv_heads, head_dim, rotary_dim, torch.float32), rtol=1e-4, atol_scale=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_step_with_qk_norm_and_partial_rotary_matches_float64(dtype):
    tol = 4e-2 if dtype == torch.bfloat16 else 5e-3
    check(Decoder(6, 2, 96, 64, dtype), rtol=tol, atol_scale=tol)


@pytest.mark.parametrize("qk_norm", [(True, False), (False, True), (False, False)], ids=["q_only", "k_only", "none"])
def test_either_norm_alone_and_a_biased_qkv(qk_norm):
    check(Decoder(4, 2, 64, 64, torch.float32, qk_norm=qk_norm, bias=True), rtol=1e-4, atol_scale=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_norms_split_over_any_team_size(threads):
    """Each member normalises its share of the (token, head) rows; shares cut through q and k blocks."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert _native.cpu_module().num_threads() == threads
        check(Decoder(5, 1, 80, 80, torch.float32), rtol=1e-4, atol_scale=1e-4)
    finally:
        torch.set_num_threads(before)


def test_the_norms_change_the_result():
    """The plan's logits (with norms) differ from the reference without them: the tests above would
    see a norm the step skipped."""
    decoder = Decoder(4, 2, 64, 64, torch.float32)
    logits, _, _, _ = run_step(decoder)
    for L in decoder.layers:
        L["q_norm"] = L["k_norm"] = None
    _, without, _, _ = run_step(decoder)
    assert not torch.allclose(logits.double(), without, rtol=1e-2, atol=1e-2)


def test_bad_norm_weights_are_named():
    native = _native.cpu_module()
    d = Decoder(4, 2, 64, 64, torch.float32)
    L = d.layers[0]

    def layer(**kwargs):
        dense = native.PlanWeight.dense
        return native.PlanLayer(view(L["in"]), EPS, dense(view(L["qkv"])), dense(view(L["o"])), view(L["post"]), EPS,
                                dense(view(L["gate_up"])), dense(view(L["down"])), 0.125, None, **kwargs)

    def plan(layers, **kwargs):
        return native.DecoderPlan(0, 4, 2, 64, True, native.PlanWeight.dense(view(d.embed)), layers,
                                  view(d.final), EPS, native.PlanWeight.dense(view(d.lm_head)), view(d.cos_sin),
                                  **kwargs)

    short = torch.ones(63)
    with pytest.raises(ValueError, match=r"layers\[1\]\.k_norm must have shape \[64\], got \[63\]"):
        plan([layer(), layer(k_norm=view(short))])
    with pytest.raises(ValueError, match=r"layers\[0\]\.q_norm: eps must be positive, got 0"):
        plan([layer(q_norm=view(torch.ones(64)), qk_norm_eps=0.0)])
    with pytest.raises(ValueError, match=r"layers\[0\]\.q_norm must be float32 or float32, got float64"):
        plan([layer(q_norm=view(torch.ones(64, dtype=torch.float64)))])
    with pytest.raises(ValueError, match=r"rotary_dim 32 disagrees with cos_sin_cache \[256, 64\]"):
        plan([layer()], rotary_dim=32)
