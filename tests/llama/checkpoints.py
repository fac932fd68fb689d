"""Tiny random-weight checkpoints written by transformers, and the parity checks run on them.

Shared by the plugins built on the Llama decoder (llama, mistral, qwen2): ``family`` picks the
transformers classes. Weights are redrawn with a larger std than transformers' 0.02 so logits are
well separated: greedy comparisons then test the model, not floating-point tie breaking.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from tests.engine.tiny_tokenizers import byte_level_bpe

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


# family -> transformers (config class, causal LM class)
HF_CLASSES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
              "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
              "phi3": ("Phi3Config", "Phi3ForCausalLM")}


def hf_model(seed: int = 0, family: str = "llama", **overrides):
    """A seeded transformers ``<Family>ForCausalLM`` (float32, eval mode) of the ``TINY`` size."""
    import transformers

    config_class, model_class = (getattr(transformers, name) for name in HF_CLASSES[family])
    kwargs = {**TINY, "bos_token_id": 3, "eos_token_id": 0, **overrides}
    torch.manual_seed(seed)
    model = model_class(config_class(**kwargs)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.15)
    return model


def write_checkpoint(folder: Path, model, *, max_shard_size: str | None = None, tokenizer: bool = True,
                     name_or_path: str | None = None) -> Path:
    """``save_pretrained`` (optionally sharded) plus a tiny byte-level BPE tokenizer.json."""
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    if name_or_path is not None:
        config = json.loads((folder / "config.json").read_text())
        config["_name_or_path"] = name_or_path
        (folder / "config.json").write_text(json.dumps(config))
    if tokenizer:
        byte_level_bpe(400).save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return folder


def teacher_forced_logits(plugin, tokens: list[int], prompt_len: int, chunk: int | None = None) -> torch.Tensor:
    """float32 logits ``[len(tokens), vocab]`` at every position, through ``plugin.model`` and its cache.

    The prompt goes in as one prefill, or in prefill chunks of ``chunk`` tokens (each attending to
    the chunks cached before it); every later token is then a decode step.
    """
    cache, model, seq = plugin.kv_cache, plugin.model, "s"
    rows, done = [], 0
    while done < prompt_len:
        n = min(chunk or prompt_len, prompt_len - done)
        cache.append_slots(seq, n) if done else cache.allocate(seq, n)
        meta = cache.build_metadata([seq], [n])
        logits = model(torch.tensor(tokens[done:done + n]), torch.arange(done, done + n), meta,
                       cache.key_caches, cache.value_caches, all_logits=True)
        rows.append(logits.float().clone())
        done += n
    for pos in range(prompt_len, len(tokens)):
        cache.append_slots(seq, 1)
        meta = cache.build_metadata([seq], [1])
        rows.append(model(torch.tensor([tokens[pos]]), torch.tensor([pos]), meta,
                          cache.key_caches, cache.value_caches).float().clone())
    cache.free(seq)
    return torch.cat(rows)


def hf_greedy(hf, prompt: list[int], new_tokens: int) -> list[int]:
    """transformers' greedy continuation of ``prompt`` (EOS ignored)."""
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


# ----- parity checks shared by the plugins' tests -----

BLOCK = 16
BF16_TOL = dict(rtol=0.05, atol=0.2)  # bf16 keeps 8 mantissa bits; logits here are O(1-10)


def load_plugin(plugin_class, folder, dtype: str = "float32", **kw):
    """``plugin_class().load(...)`` with 16-token KV blocks and room for 4 sequences of 256 tokens."""
    plugin = plugin_class()
    plugin.load(model_path=folder, dtype=dtype, kv_block_size=BLOCK, max_seq_len=256, max_batch_size=4, **kw)
    return plugin


def random_tokens(n: int, seed: int, vocab: int = TINY["vocab_size"]) -> list[int]:
    torch.manual_seed(seed)
    return torch.randint(1, vocab, (n,)).tolist()


def hf_logits(hf, tokens: list[int]) -> torch.Tensor:
    """transformers' logits ``[len(tokens), vocab]`` for one sequence, in its dtype."""
    with torch.no_grad():
        return hf(torch.tensor([tokens])).logits[0]


def assert_bfloat16_parity(hf, plugin, tokens: list[int], prompt_len: int) -> None:
    """``plugin`` (loaded in bfloat16) is within ``BF16_TOL`` of transformers run in bfloat16, and its
    error against the float32 ``hf`` is no worse than transformers' own bfloat16 error."""
    expected = hf_logits(copy.deepcopy(hf).to(torch.bfloat16), tokens).float()
    exact = hf_logits(hf, tokens)
    ours = teacher_forced_logits(plugin, tokens, prompt_len)
    torch.testing.assert_close(ours, expected, **BF16_TOL)
    assert (ours - exact).abs().max() <= 1.25 * (expected - exact).abs().max()


def assert_greedy_parity(hf, plugin, prompt: list[int], new_tokens: int = 64) -> None:
    """The plugin's engine continues ``prompt`` greedily exactly as transformers does."""
    from inference_pio.engine.generate import greedy

    [seq] = plugin.engine.generate([prompt], greedy(new_tokens, ignore_eos=True))
    assert seq.output_token_ids == hf_greedy(hf, prompt, new_tokens)
    assert seq.finish_reason == "length"


def assert_refused_without(plugin_class, folder: Path, tensor: str) -> None:
    """Deletes ``tensor`` from ``folder``'s model.safetensors: the plugin must refuse it by name."""
    from safetensors.torch import load_file, save_file

    from inference_pio.weights import WeightLoadError

    state = load_file(folder / "model.safetensors")
    del state[tensor]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    plugin = plugin_class()
    assert not plugin.initialize(model_path=folder)
    assert isinstance(plugin.init_error, WeightLoadError)
    assert tensor in str(plugin.init_error)


def load_as_a_user(folder, plugin_name: str):
    """``inference_pio.load(folder)`` picks ``plugin_name`` from config.json and generates; returns the plugin."""
    import inference_pio

    model = inference_pio.load(folder, dtype="float32", max_seq_len=64)
    assert model.plugin.metadata.name == plugin_name
    [result] = model.generate([5, 6, 7], max_tokens=4, ignore_eos=True)
    assert len(result.token_ids) == 4 and result.finish_reason == "length"
    return model.plugin
