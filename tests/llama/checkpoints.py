"""Tiny random-weight checkpoints written by transformers, and the parity checks run on them.

Shared by the plugins built on the Llama decoder (llama, mistral, qwen2): ``family`` picks the
transformers classes. Weights are redrawn with a larger std than transformers' 0.02 so logits are
well separated: greedy comparisons then test the model, not floating-point tie breaking.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.engine.tiny_tokenizers import byte_level_bpe

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


# family -> transformers (config class, causal LM class)
HF_CLASSES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
              "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}


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
