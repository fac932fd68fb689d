"""The fused C++ decode step (layers/fused_decode.py, csrc/decoder/) against the
per-op path of the same model on the same cache state.

Each decode step runs twice on the same metadata: per-op first (``INFERENCE_PIO_FUSED_DECODE=0``),
then fused; both write the step's keys/values to the same slots and read the same earlier ones, so
their logits must agree to rounding. Sequences of different lengths cross KV blocks of 16 tokens.
The plugins' own parity tests (tests/llama, tests/mistral, tests/qwen2) meanwhile check the fused
step against transformers, since it is the default decode path.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from inference_pio.engine.generate import greedy
from inference_pio.ops._tensor import view
from inference_pio.layers.fused_decode import (FUSED_DECODE_ENV, FusedDecoder, FusedDecodeUnsupported,
                                                 forget_fused_decoder, fused_decoder_of)
from inference_pio.plugins.llama import Llama_Plugin
from tests.llama.checkpoints import hf_model, load_plugin, random_tokens, write_checkpoint

PROMPT_LENS = (5, 17, 33)  # 1, 2 and 3 blocks of 16; 12 decode steps take the last one into a 4th
DECODE_STEPS = 12


@pytest.fixture(scope="module")
def gqa_folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("gqa"), hf_model())


@pytest.fixture(scope="module")
def biased_folder(tmp_path_factory):
    """q/k/v and o_proj biases (drawn non-zero like the weights), tied embeddings."""
    return write_checkpoint(tmp_path_factory.mktemp("bias"), hf_model(attention_bias=True, tie_word_embeddings=True))


def fused_and_unfused_decode(plugin, monkeypatch, batch: int, steps: int = DECODE_STEPS, prompt_lens=PROMPT_LENS):
    """Prefills ``batch`` sequences (``prompt_lens``), then runs ``steps`` decode steps both ways;
    returns the two float32 logits stacks ``[steps, batch, vocab]`` (per-op, fused)."""
    model, cache = plugin.model, plugin.kv_cache
    seqs = [f"s{i}" for i in range(batch)]
    lens = list(prompt_lens[:batch])
    tokens = [random_tokens(n + steps, seed=10 + i) for i, n in enumerate(lens)]
    monkeypatch.setenv(FUSED_DECODE_ENV, "0")
    for seq, n, toks in zip(seqs, lens, tokens):
        cache.allocate(seq, n)
        meta = cache.build_metadata([seq], [n])
        model(torch.tensor(toks[:n]), torch.arange(n), meta, cache.key_caches, cache.value_caches)
    unfused, fused = [], []
    for step in range(steps):
        for seq in seqs:
            cache.append_slots(seq, 1)
        meta = cache.build_metadata(seqs, [1] * batch)
        ids = torch.tensor([toks[n + step] for n, toks in zip(lens, tokens)])
        pos = torch.tensor([n + step for n in lens])
        for flag, out in (("0", unfused), ("1", fused)):
            monkeypatch.setenv(FUSED_DECODE_ENV, flag)
            out.append(model(ids, pos, meta, cache.key_caches, cache.value_caches).float().clone())
    for seq in seqs:
        cache.free(seq)
    assert fused_decoder_of(model) is not None, "the fused path did not run"
    return torch.stack(unfused), torch.stack(fused)


def assert_float32_close(fused: torch.Tensor, unfused: torch.Tensor) -> None:
    scale = unfused.abs().max().item()
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("batch", [1, 3])
def test_float32_fused_step_matches_per_op_step(gqa_folder, monkeypatch, batch):
    unfused, fused = fused_and_unfused_decode(load_plugin(Llama_Plugin, gqa_folder), monkeypatch, batch)
    assert_float32_close(fused, unfused)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_fused_step_matches_per_op_step(gqa_folder, monkeypatch, dtype):
    unfused, fused = fused_and_unfused_decode(load_plugin(Llama_Plugin, gqa_folder, dtype=dtype), monkeypatch, 3)
    # The same kernels in the same order: only the 16-bit rounding of a few values may differ.
    eps = torch.finfo(getattr(torch, dtype)).eps
    torch.testing.assert_close(fused, unfused, rtol=2 * eps, atol=2 * eps * unfused.abs().max().item())


def test_qkv_bias_tied_head_and_per_layer_sliding_window(biased_folder, monkeypatch):
    plugin = load_plugin(Llama_Plugin, biased_folder)
    # Layer 1 attends to the last 20 tokens only (contexts reach 45 here): as Qwen2's upper layers do.
    plugin.model.layers[1].self_attn.attn.sliding_window = 20
    unfused, fused = fused_and_unfused_decode(plugin, monkeypatch, 3)
    assert_float32_close(fused, unfused)
    # The window changed the result (else this test would not test it).
    forget_fused_decoder(plugin.model)
    plugin.model.layers[1].self_attn.attn.sliding_window = None
    _, unwindowed = fused_and_unfused_decode(plugin, monkeypatch, 3)
    assert not torch.allclose(unwindowed[-1], fused[-1], rtol=1e-3, atol=1e-3)


def test_greedy_generation_identical_with_the_switch_on_and_off(gqa_folder, monkeypatch):
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    prompts = [random_tokens(n, seed=20 + n) for n in (3, 18, 31)]
    outputs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(FUSED_DECODE_ENV, flag)
        outputs[flag] = [s.output_token_ids for s in plugin.engine.generate(prompts, greedy(32, ignore_eos=True))]
    assert outputs["1"] == outputs["0"]
    assert all(len(tokens) == 32 for tokens in outputs["1"])
    assert len({tuple(t) for t in outputs["1"]}) == 3


def test_switch_off_never_builds_the_plan(gqa_folder, monkeypatch):
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    monkeypatch.setenv(FUSED_DECODE_ENV, "0")
    plugin.engine.generate([[5, 6, 7]], greedy(3, ignore_eos=True))
    assert fused_decoder_of(plugin.model) is None


def test_a_copied_model_builds_its_own_plan(gqa_folder, monkeypatch):
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    monkeypatch.setenv(FUSED_DECODE_ENV, "1")
    [first] = plugin.engine.generate([[5, 6, 7]], greedy(4, ignore_eos=True))
    clone = copy.deepcopy(plugin.model)  # the plan (views of the original's tensors) is not copied
    assert fused_decoder_of(plugin.model) is not None and fused_decoder_of(clone) is None
    plugin.engine.model = clone
    [second] = plugin.engine.generate([[5, 6, 7]], greedy(4, ignore_eos=True))
    assert second.output_token_ids == first.output_token_ids
    assert fused_decoder_of(clone) is not None and fused_decoder_of(clone) is not fused_decoder_of(plugin.model)


# ----- bad input -----


@pytest.fixture(scope="module")
def tiny_model(gqa_folder):
    return load_plugin(Llama_Plugin, gqa_folder).model


class WrappedMLP(nn.Module):
    """Computes what GatedMLP does, but is not one: the plan cannot express it."""

    def __init__(self, mlp):
        super().__init__()
        self.inner = mlp

    def forward(self, x, out, workspace):
        return self.inner(x, out=out, workspace=workspace)


@pytest.mark.parametrize("edit, message", [
    (lambda m: setattr(m.layers[1], "mlp", WrappedMLP(m.layers[1].mlp)), r"layers\.1\.mlp must be a GatedMLP, got WrappedMLP"),
    (lambda m: setattr(m.layers[1].self_attn.o_proj, "weight", nn.Parameter(torch.zeros(64, 32), requires_grad=False)),
     r"layers\[1\]\.o_proj must have shape \[64, 64\], got \[64, 32\]"),
    (lambda m: setattr(m.lm_head, "weight", nn.Parameter(m.lm_head.weight.bfloat16(), requires_grad=False)),
     r"lm_head must be float32 \(the activation dtype\), got bfloat16"),
    (lambda m: setattr(m.norm, "weight", nn.Parameter(torch.ones(63), requires_grad=False)),
     r"final_norm must have shape \[64\], got \[63\]"),
    (lambda m: setattr(m.layers[0].self_attn.attn, "num_kv_heads", 4),
     r"layers\.1\.self_attn\.attn: heads 4/2/16 differ from layer 0's 4/4/16"),
    (lambda m: delattr(m, "rotary"), r"rotary: missing"),
])
def test_a_model_the_plan_cannot_express_is_named(tiny_model, edit, message):
    model = copy.deepcopy(tiny_model)
    edit(model)
    with pytest.raises(FusedDecodeUnsupported, match=message):
        FusedDecoder(model)


def test_the_hook_falls_back_to_the_per_op_path_with_one_warning(gqa_folder, monkeypatch):
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    model, cache = plugin.model, plugin.kv_cache
    model.layers[0].mlp = WrappedMLP(model.layers[0].mlp)
    cache.allocate("s", 20)
    meta = cache.build_metadata(["s"], [20])
    model(torch.arange(1, 21), torch.arange(20), meta, cache.key_caches, cache.value_caches)
    cache.append_slots("s", 1)
    meta = cache.build_metadata(["s"], [1])
    step = (torch.tensor([7]), torch.tensor([20]), meta, cache.key_caches, cache.value_caches)
    monkeypatch.setenv(FUSED_DECODE_ENV, "0")
    expected = model(*step).clone()
    monkeypatch.setenv(FUSED_DECODE_ENV, "1")
    with pytest.warns(UserWarning, match=r"fused decode step unavailable .*layers\.0\.mlp must be a GatedMLP"):
        first = model(*step).clone()
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not every step
        torch.testing.assert_close(model(*step), expected, rtol=0, atol=0)


@pytest.fixture
def decode_step(gqa_folder):
    """(plugin, FusedDecoder, args of one decode step of 2 sequences) after a prefill."""
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    model, cache = plugin.model, plugin.kv_cache
    for seq, n in (("a", 9), ("b", 20)):
        cache.allocate(seq, n)
        meta = cache.build_metadata([seq], [n])
        model(torch.arange(1, n + 1), torch.arange(n), meta, cache.key_caches, cache.value_caches)
        cache.append_slots(seq, 1)
    meta = cache.build_metadata(["a", "b"], [1, 1])
    return plugin, FusedDecoder(model), [torch.tensor([4, 5]), torch.tensor([9, 20]), meta, cache.key_caches,
                                         cache.value_caches]


def test_out_of_range_token_id_is_named_and_nothing_is_written(decode_step):
    plugin, decoder, args = decode_step
    before = [c.clone() for c in plugin.kv_cache.key_caches]
    args[0] = torch.tensor([4, 512])
    with pytest.raises(ValueError, match=r"input_ids\[1\] = 512 is out of range \[0, 512\)"):
        decoder(*args)
    assert all(torch.equal(a, b) for a, b in zip(before, plugin.kv_cache.key_caches))


def test_bad_step_inputs_are_named(decode_step):
    _, decoder, args = decode_step
    meta = args[2]
    with pytest.raises(ValueError, match=r"positions\[1\] = 9999 is out of range"):
        decoder(args[0], torch.tensor([9, 9999]), *args[2:])
    with pytest.raises(ValueError, match="input_ids must be int64, got int32"):
        decoder(args[0].int(), *args[1:])
    with pytest.raises(ValueError, match=r"expected 2 key and value caches \(one per layer\), got 1 and 2"):
        decoder(*args[:3], args[3][:1], args[4])
    with pytest.raises(ValueError, match=r"key_caches\[0\] must be bfloat16|key_caches\[0\] must be float32, got bfloat16"):
        decoder(*args[:3], [c.bfloat16() for c in args[3]], args[4])
    meta.context_lens[1] = 10_000
    with pytest.raises(ValueError, match=r"context_lens\[1\] = 10000 exceeds the block table's capacity"):
        decoder(*args)


def test_a_prefill_step_is_refused(decode_step):
    plugin, decoder, args = decode_step
    cache = plugin.kv_cache
    cache.allocate("c", 4)
    meta = cache.build_metadata(["c"], [4])
    with pytest.raises(ValueError, match="needs a decode step"):
        decoder(torch.arange(4), torch.arange(4), meta, cache.key_caches, cache.value_caches)


# ----- quantized weights (GGUF blocks) -----

Q4_0, Q4_1, Q8_0 = 2, 3, 8  # ggml type ids
QUANTIZED = {"self_attn.qkv_proj": Q4_1, "self_attn.o_proj": Q8_0, "mlp.gate_up_proj": Q4_0, "mlp.down_proj": Q4_1}


def quantize_model(model, quantize_input: bool) -> None:
    """Every projection and the embedding as GGUF blocks (mixed types); layer 1's qkv kept as a
    row-split projection of a Q4_1 q, a Q8_0 k and a dense v, as a GGUF with mixed types loads."""
    from inference_pio.layers import Linear, QuantizedLinear, swap_in_quantized
    from inference_pio.layers.row_split import RowSplitLinear
    from inference_pio.quant import QuantizedTensor

    state = {}
    for i, layer in enumerate(model.layers):
        for path, qtype in QUANTIZED.items():
            module = layer.get_submodule(path)
            state[f"layers.{i}.{path}.weight"] = QuantizedTensor.quantize(module.weight, qtype)
            if module.bias is not None:
                state[f"layers.{i}.{path}.bias"] = module.bias
    state["embed_tokens.weight"] = QuantizedTensor.quantize(model.embed_tokens.weight, Q8_0)
    state["lm_head.weight"] = QuantizedTensor.quantize(model.lm_head.weight, Q8_0)
    attn = model.layers[1].self_attn
    w, c = attn.qkv_proj.weight, model.config
    q, k, v = w.split([c.q_size, c.kv_size, c.kv_size])
    dense_v = Linear(v.shape[1], v.shape[0], False, v.dtype)
    dense_v.weight = nn.Parameter(v.clone(), requires_grad=False)
    del state["layers.1.self_attn.qkv_proj.weight"]
    swap_in_quantized(model, state)
    attn.qkv_proj = RowSplitLinear([QuantizedLinear(QuantizedTensor.quantize(q, Q4_1)),
                                    QuantizedLinear(QuantizedTensor.quantize(k, Q8_0)), dense_v])
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            module.quantize_input = quantize_input


@pytest.mark.parametrize("quantize_input", [False, True], ids=["exact", "int8_input"])
def test_quantized_weights_fused_step_matches_per_op_step(gqa_folder, monkeypatch, quantize_input):
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    reference = fused_and_unfused_decode(load_plugin(Llama_Plugin, gqa_folder), monkeypatch, 3)[0]
    quantize_model(plugin.model, quantize_input)
    unfused, fused = fused_and_unfused_decode(plugin, monkeypatch, 3)
    assert_float32_close(fused, unfused)
    # The blocks were used (the logits moved) and hold the same model (the logits point the same way).
    assert not torch.allclose(unfused, reference, rtol=1e-3, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(unfused.flatten(), reference.flatten(), dim=0) > 0.9


def test_one_plan_serves_batches_that_grow_and_shrink(gqa_folder, monkeypatch):
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    for batch in (1, 3, 2):
        unfused, fused = fused_and_unfused_decode(plugin, monkeypatch, batch, steps=3)
        assert_float32_close(fused, unfused)


@pytest.fixture
def torch_threads():
    """Sets the OpenMP threads of torch and of our kernels (one runtime) for a test, then restores them."""
    from inference_pio import _native

    before = torch.get_num_threads()

    def set_threads(n: int) -> None:
        torch.set_num_threads(n)
        assert _native.cpu_module().num_threads() == n, "the kernels did not take the thread count"

    yield set_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_thread_team_per_step_matches_per_op_step_on_any_thread_count(gqa_folder, biased_folder, monkeypatch,
                                                                          torch_threads, threads):
    """The fused step runs as one OpenMP team (projections shared out by rows, the small ops split
    inside, split-K attention merging through one shared buffer): any team size gives the per-op result."""
    torch_threads(threads)
    plugin = load_plugin(Llama_Plugin, gqa_folder)
    assert_float32_close(*reversed(fused_and_unfused_decode(plugin, monkeypatch, 3, steps=3)))
    # One sequence whose 200+ keys split into ranges over the team (two threads or more).
    assert_float32_close(*reversed(fused_and_unfused_decode(plugin, monkeypatch, 1, steps=2, prompt_lens=(203,))))
    # Mixed GGUF types, a row-split qkv whose parts differ in bytes per row.
    quantize_model(plugin.model, False)
    forget_fused_decoder(plugin.model)
    assert_float32_close(*reversed(fused_and_unfused_decode(plugin, monkeypatch, 3, steps=3)))
    # Biases: each thread's share of the rows takes its share of the bias.
    biased = load_plugin(Llama_Plugin, biased_folder)
    assert_float32_close(*reversed(fused_and_unfused_decode(biased, monkeypatch, 3, steps=3)))


def test_bad_quantized_weights_are_named(tiny_model):
    from inference_pio import _native

    model = copy.deepcopy(tiny_model)
    quantize_model(model, quantize_input=False)
    qweight = model.layers[0].mlp.down_proj.qweight
    qweight.data = qweight.data[:, :-2].contiguous()  # a row two bytes short of its 5 Q4_1 blocks
    with pytest.raises(FusedDecodeUnsupported,
                       match=r"layers\[0\]\.down must be uint8 \[64, 100\] \(Q4_1 blocks of 160 columns\), got \[64, 98\]"):
        FusedDecoder(model)
    blocks = torch.zeros(4, 34, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unsupported ggml quantization type id 99"):
        _native.cpu_module().PlanWeight.quantized(view(blocks), 99, 32)
