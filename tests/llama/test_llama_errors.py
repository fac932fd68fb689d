"""Bad checkpoints and bad requests fail with messages that say what was wrong."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file

import inference_pio
from inference_pio.engine import KVCacheFullError
from inference_pio.engine.generate import greedy
from inference_pio.plugin import ConfigError, NoPluginForModelError
from inference_pio.weights import WeightLoadError

from .checkpoints import hf_model, write_checkpoint


def test_missing_config_json(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        inference_pio.load(tmp_path)


def test_unknown_architecture_lists_known_plugins(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(NoPluginForModelError, match="known model types: .*llama"):
        inference_pio.load(tmp_path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), hf_model(num_hidden_layers=1))


def _rewrite_weights(src, dst, edit):
    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    state = load_file(src / "model.safetensors")
    edit(state)
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_missing_weight_is_named(folder, tmp_path):
    bad = _rewrite_weights(folder, tmp_path / "bad", lambda s: s.pop("model.layers.0.mlp.up_proj.weight"))
    with pytest.raises(WeightLoadError, match="missing: model.layers.0.mlp.up_proj.weight"):
        inference_pio.load(bad)


def test_misshaped_weight_is_named(folder, tmp_path):
    def shrink(s):
        s["model.layers.0.self_attn.k_proj.weight"] = s["model.layers.0.self_attn.k_proj.weight"][:16].clone()
    bad = _rewrite_weights(folder, tmp_path / "bad", shrink)
    with pytest.raises(WeightLoadError, match=r"k_proj.weight \(expected \[32, 64\], found \[16, 64\]\)"):
        inference_pio.load(bad)


def test_prompt_longer_than_context(folder):
    model = inference_pio.load(folder, max_seq_len=32)
    with pytest.raises(ValueError, match="prompt 0 has 40 tokens but the context holds at most 32"):
        model.generate([list(range(1, 41))], max_tokens=4)
    # A prompt that fits stops with "length" where the context ends.
    [result] = model.generate([list(range(1, 31))], max_tokens=10, temperature=0, ignore_eos=True)
    assert result.finish_reason == "length" and len(result.token_ids) == 2


def test_kv_cache_exhausted_preempts_or_raises_and_leaves_cache_usable(folder):
    model = inference_pio.load(folder, num_kv_blocks=3, kv_block_size=16)
    cache = model.plugin.kv_cache
    prompts = [list(range(1, 21)), list(range(2, 22))]
    # 2 x 20 tokens need 4 blocks: the second request waits (or is preempted) until the first is done.
    both = model.generate(prompts, max_tokens=4, temperature=0, ignore_eos=True)
    alone = [model.generate([p], max_tokens=4, temperature=0, ignore_eos=True)[0] for p in prompts]
    assert [r.token_ids for r in both] == [r.token_ids for r in alone]
    assert cache.usage().used_blocks == 0
    # 40 prompt tokens fit in 3 blocks; decoding past 48 does not, even with the cache to itself.
    with pytest.raises(KVCacheFullError, match="the whole cache holds 48"):
        model.generate([list(range(1, 41))], max_tokens=20, temperature=0, ignore_eos=True)
    assert cache.usage().used_blocks == 0
    with pytest.raises(KVCacheFullError):  # a prompt larger than the whole cache is refused at admission
        model.generate([list(range(1, 60))], max_tokens=2, temperature=0, ignore_eos=True)
    assert cache.usage().used_blocks == 0
    [ok] = model.generate([list(range(1, 41))], max_tokens=8, temperature=0, ignore_eos=True)
    assert len(ok.token_ids) == 8


def test_cleanup_releases_weights_and_kv_cache(folder):
    model = inference_pio.load(folder)
    weight = weakref.ref(model.plugin.model.embed_tokens.weight)
    kv = weakref.ref(model.plugin.kv_cache.key_caches[0])
    model.generate("Hello", max_tokens=2)
    model.close()
    assert weight() is None and kv() is None
    with pytest.raises(RuntimeError, match="closed"):
        model.generate("Hello", max_tokens=2)
