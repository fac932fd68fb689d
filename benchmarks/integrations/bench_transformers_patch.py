"""``generate`` of a transformers model with and without ``apply_inference_pio``, on CPU.

A random-weight Llama of SmolLM2-135M's shape (30 layers, hidden 576, GQA 9/3), one 32-token
prompt, 32 new tokens (greedy, EOS ignored), float32 and bfloat16. The same model object is
timed unpatched and patched; the patch is reverted after each patched round. The figure to read is
the ratio of the medians within a group (``tokens_per_s`` in extra_info).

    pytest benchmarks/integrations --benchmark-warmup=on --benchmark-group-by=group
"""

from __future__ import annotations

import pytest
import torch

from inference_pio.integrations.transformers import apply_inference_pio, revert_inference_pio

pytest.importorskip("transformers")

PROMPT_TOKENS, NEW_TOKENS = 32, 32
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                     rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="module")
def models():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    fp32 = LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).eval()
    return {"fp32": fp32, "bf16": LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).to(torch.bfloat16).eval()}


def generate(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                              pad_token_id=0)


@pytest.mark.parametrize("patched", [False, True], ids=["transformers", "inference_pio_patched"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_generate(benchmark, models, dtype, patched):
    model = models[dtype]
    ids = torch.randint(3, SMOLLM2_SHAPE["vocab_size"], (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(1))
    benchmark.group = f"generate {PROMPT_TOKENS}+{NEW_TOKENS} tokens, SmolLM2-135M shape, {dtype}"
    if patched:
        apply_inference_pio(model)
    try:
        out = benchmark.pedantic(generate, (model, ids), rounds=3, warmup_rounds=1) if not benchmark.disabled \
            else generate(model, ids)
    finally:
        revert_inference_pio(model)
    assert out.shape == (1, PROMPT_TOKENS + NEW_TOKENS)
    benchmark.extra_info.update(dtype=dtype, patched=patched, threads=torch.get_num_threads())
    if benchmark.stats:
        benchmark.extra_info["tokens_per_s"] = round(NEW_TOKENS / benchmark.stats.stats.median, 2)
