"""Tiny random-weight Llama checkpoints written by transformers, for parity tests.

Weights are redrawn with a larger std than transformers' 0.02 so logits are well separated:
greedy comparisons then test the model, not floating-point tie breaking.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.engine.tiny_tokenizers import byte_level_bpe

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def hf_model(seed: int = 0, **overrides):
    """A seeded transformers ``LlamaForCausalLM`` (float32, eval mode)."""
    from transformers import LlamaConfig as HFLlamaConfig, LlamaForCausalLM

    kwargs = {**TINY, "bos_token_id": 3, "eos_token_id": 0, **overrides}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(HFLlamaConfig(**kwargs)).eval()
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
