"""apply_inference_pio: a patched transformers model gives the unpatched model's logits and greedy
tokens while our kernels do the work, and revert() puts every original back."""

from __future__ import annotations

import contextlib
import copy
from unittest import mock

import pytest
import torch

pytest.importorskip("transformers")

from inference_pio import ops  # noqa: E402
from inference_pio.integrations import transformers as integration  # noqa: E402
from inference_pio.integrations.transformers import apply_inference_pio, revert_inference_pio  # noqa: E402
from inference_pio import _native  # noqa: E402
from tests.llama.checkpoints import hf_model  # noqa: E402

# Windows (20 tokens) shorter than prompt + generated tokens, so decode steps slide them.
MODELS = {
    "llama": dict(family="llama"),
    "mistral": dict(family="mistral", sliding_window=20),
    "qwen2": dict(family="qwen2", use_sliding_window=True, sliding_window=20, max_window_layers=1,
                  tie_word_embeddings=True),
}
# linear: the C++ kernel itself (layers.Linear reaches it for decode-sized inputs on the CPU).
KERNELS = {"rms_norm": (ops, "rms_norm"), "rope": (ops, "rotary_embedding"), "swiglu": (ops, "silu_and_mul"),
           "attention": (ops, "prefill_attention"), "linear": (_native.cpu_module(), "linear")}


@pytest.fixture
def kernel_calls():
    """Counts the calls reaching each kernel (the patch must not quietly fall back to transformers)."""
    spies = {name: mock.patch.object(owner, attr, wraps=getattr(owner, attr)) for name, (owner, attr) in KERNELS.items()}
    calls = {name: spy.start() for name, spy in spies.items()}
    yield calls
    for spy in spies.values():
        spy.stop()


def prompt(batch: int = 1, length: int = 40, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randint(1, 512, (batch, length))


def run(model, ids: torch.Tensor, new_tokens: int = 32, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(prefill logits, greedy continuation) under no_grad, as inference runs."""
    with torch.no_grad():
        logits = model(ids, **kw).logits.float()
        tokens = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=0, **kw)
    return logits, tokens


@contextlib.contextmanager
def patched(model, **options):
    """``with patched(model) as patch:`` applies inside the block, reverts after it."""
    try:
        yield apply_inference_pio(model, **options)
    finally:
        revert_inference_pio(model)


@pytest.mark.parametrize("name", MODELS)
def test_patched_model_matches_unpatched_float32(name, kernel_calls):
    model = hf_model(**MODELS[name])
    ids = prompt(batch=2)
    expected_logits, expected_tokens = run(model, ids)
    with patched(model):
        logits, tokens = run(model, ids)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(tokens, expected_tokens)
    assert {name: spy.call_count > 0 for name, spy in kernel_calls.items()} == dict.fromkeys(KERNELS, True)


def test_a_plugin_family_in_the_llama_layout_is_patched_too(kernel_calls, tmp_path, monkeypatch):
    """Qwen3 (q/k RMSNorm on each head) comes with a plugin's manifest (a folder here, so the test
    does not hang on the built-in one); nothing in the patch names it."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tests.llama.checkpoints import TINY
    from tests.plugin.plugin_files import write_plugin

    write_plugin(tmp_path / "q3", "Q3Test", model_types=["qwen3"], architectures=["Qwen3ForCausalLM"])
    monkeypatch.setenv("INFERENCE_PIO_PLUGIN_PATH", str(tmp_path / "q3"))

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**{**TINY, "bos_token_id": 3, "eos_token_id": 0})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(0.8, 1.2) if "norm" in name else p.normal_(0.0, 0.15)
    ids = prompt(batch=2)
    expected_logits, expected_tokens = run(model, ids)
    with patched(model):
        logits, tokens = run(model, ids)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(tokens, expected_tokens)
    assert {name: spy.call_count > 0 for name, spy in kernel_calls.items()} == dict.fromkeys(KERNELS, True)


def test_patched_model_matches_unpatched_bfloat16(kernel_calls):
    model = hf_model(**MODELS["qwen2"]).to(torch.bfloat16)
    ids = prompt()
    expected, _ = run(model, ids, new_tokens=1)
    with patched(model):
        ours, _ = run(model, ids, new_tokens=1)
    exact, _ = run(hf_model(**MODELS["qwen2"]), ids, new_tokens=1)
    torch.testing.assert_close(ours, expected, rtol=0.05, atol=0.25)
    # Our kernels round once per op: no further from the float32 model than transformers' bf16 code.
    assert (ours - exact).abs().max() <= 1.25 * (expected - exact).abs().max()
    assert kernel_calls["attention"].call_count > 0


def test_left_padded_batch_takes_the_masked_path_and_matches(kernel_calls):
    model = hf_model(**MODELS["mistral"])
    ids = prompt(batch=2, length=30)
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # row 0 is left-padded: transformers' boolean mask must be honoured
    expected = run(model, ids, new_tokens=16, attention_mask=mask)
    with patched(model):
        ours = run(model, ids, new_tokens=16, attention_mask=mask)
    torch.testing.assert_close(ours[0][mask.bool()], expected[0][mask.bool()], rtol=1e-4, atol=1e-4)
    assert torch.equal(ours[1], expected[1])
    # Padding needs transformers' mask, so SDPA attends; the other kernels still run.
    assert kernel_calls["attention"].call_count == 0 and kernel_calls["rms_norm"].call_count > 0


def test_static_cache_generate_matches():
    """A static cache holds keys past the current position: the mask must stay, not be skipped."""
    model = hf_model(**MODELS["llama"])
    ids = prompt(length=20)
    expected = run(model, ids, new_tokens=12, cache_implementation="static")
    with patched(model):
        ours = run(model, ids, new_tokens=12, cache_implementation="static")
    assert torch.equal(ours[1], expected[1])


def test_revert_restores_every_original():
    model = hf_model(**MODELS["mistral"])
    modeling = integration.importlib.import_module("transformers.models.mistral.modeling_mistral")
    rope, attn = modeling.apply_rotary_pos_emb, model.config._attn_implementation
    ids = prompt()
    before = run(model, ids, new_tokens=4)
    patch = apply_inference_pio(model)
    assert modeling.apply_rotary_pos_emb is not rope and model.config._attn_implementation == "inference_pio"
    assert all("forward" in m.__dict__ for m in patch.patched_modules) and len(patch.patched_modules) == 22
    patch.revert()
    assert modeling.apply_rotary_pos_emb is rope and model.config._attn_implementation == attn
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert "_inference_pio_patch" not in model.__dict__
    after = run(model, ids, new_tokens=4)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    patch.revert()  # a second revert does nothing
    revert_inference_pio(model)


def test_patching_twice_is_harmless():
    model = hf_model(**MODELS["llama"])
    ids = prompt()
    expected = run(model, ids, new_tokens=8)
    first = apply_inference_pio(model, attention=False)
    forwards = {id(m): m.__dict__["forward"] for m in first.patched_modules}
    second = apply_inference_pio(model)  # adds attention, re-wraps nothing
    assert second is first and first.applied == set(integration.OPTIONS)
    assert {id(m): m.__dict__["forward"] for m in second.patched_modules} == forwards
    ours = run(model, ids, new_tokens=8)
    torch.testing.assert_close(ours[0], expected[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(ours[1], expected[1])
    revert_inference_pio(model)
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_rope_stays_patched_while_another_model_uses_it():
    modeling = integration.importlib.import_module("transformers.models.llama.modeling_llama")
    original = modeling.apply_rotary_pos_emb
    a, b = hf_model(num_hidden_layers=1), hf_model(num_hidden_layers=1, seed=1)
    apply_inference_pio(a, rope=True)
    apply_inference_pio(b, rope=True)
    revert_inference_pio(a)
    assert modeling.apply_rotary_pos_emb is not original
    revert_inference_pio(b)
    assert modeling.apply_rotary_pos_emb is original


def test_only_the_chosen_pieces_are_patched(kernel_calls):
    model = hf_model(**MODELS["llama"])
    with patched(model, rms_norm=True, rope=False, swiglu=False, linear=False,
                                      attention=False) as patch:
        assert patch.applied == {"rms_norm"} and len(patch.patched_modules) == 5  # 2 per layer + final
        run(model, prompt(), new_tokens=2)
    assert kernel_calls["rms_norm"].call_count > 0
    assert all(kernel_calls[name].call_count == 0 for name in ("rope", "swiglu", "attention", "linear"))


def test_training_forward_falls_back_and_backpropagates(kernel_calls):
    model = hf_model(**MODELS["qwen2"])
    reference = copy.deepcopy(model)
    ids = prompt()
    with patched(model):
        loss = model(ids, labels=ids).loss  # autograd recording: transformers' code runs
        loss.backward()
    expected = reference(ids, labels=ids).loss
    expected.backward()
    torch.testing.assert_close(loss, expected)
    assert all(spy.call_count == 0 for spy in kernel_calls.values())
    assert model.model.embed_tokens.weight.grad is not None


def test_a_dtype_without_kernels_runs_transformers_code(kernel_calls):
    """float64: every piece steps aside; attention still gets the causal + window mask it skipped."""
    model = hf_model(**MODELS["mistral"]).to(torch.float64)
    ids = prompt()
    expected = run(model, ids, new_tokens=8)
    with patched(model):
        ours = run(model, ids, new_tokens=8)
    torch.testing.assert_close(ours[0], expected[0], rtol=1e-10, atol=1e-10)
    assert torch.equal(ours[1], expected[1])
    assert all(spy.call_count == 0 for spy in kernel_calls.values())


def test_a_module_with_someone_elses_forward_is_left_alone():
    model = hf_model(**MODELS["llama"])
    norm = model.model.norm
    hooked = norm.forward  # stands in for accelerate's offload hook
    norm.forward = hooked
    with patched(model, rope=False, swiglu=False, linear=False, attention=False) as patch:
        assert patch.skipped_modules == ["model.norm"] and norm.forward is hooked
    assert norm.forward is hooked


def test_other_architectures_are_refused_by_name():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="llama, mistral, qwen2.*GPT2LMHeadModel.*'gpt2'"):
        apply_inference_pio(model)
    with pytest.raises(ValueError, match="model_type None"):
        apply_inference_pio(torch.nn.Linear(2, 2))


def test_a_non_silu_mlp_is_refused_before_anything_is_patched():
    model = hf_model(num_hidden_layers=1, hidden_act="gelu")
    with pytest.raises(ValueError, match="hidden_act is 'gelu'"):
        apply_inference_pio(model)
    assert "_inference_pio_patch" not in model.__dict__ and model.config._attn_implementation != "inference_pio"
    with patched(model, swiglu=False) as patch:  # the other pieces still apply
        assert "swiglu" not in patch.applied and "rms_norm" in patch.applied


def test_the_patched_model_types_are_the_plugins_in_the_llama_layout(tmp_path, monkeypatch):
    from tests.plugin.plugin_files import write_plugin

    served = integration.supported_model_types()
    assert {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}.items() <= served.items()
    assert "deepseek_v3" not in served  # latent attention: no q/k/v projections to run
    # Plugins added by a folder bring their model types, when transformers' classes fit the patch.
    write_plugin(tmp_path / "p" / "q3", "Q3Test", model_types=["qwen3"], architectures=["Qwen3ForCausalLM"])
    write_plugin(tmp_path / "p" / "p3", "P3Test", model_types=["phi3"], architectures=["Phi3ForCausalLM"])
    monkeypatch.setenv("INFERENCE_PIO_PLUGIN_PATH", str(tmp_path / "p"))
    served = integration.supported_model_types()
    assert served["qwen3"] == "Qwen3" and "phi3" not in served  # Phi-3 fuses qkv and gate_up
