"""Warm-up at load (engine/warmup.py): weights paged in, the fused decode plan built and the KV cache
left as it was, so the first request runs like the later ones and sees the same state."""

from __future__ import annotations

import pytest
import torch

import inference_pio
from inference_pio.engine import warmup
from inference_pio.engine.generate import greedy
from inference_pio.layers.fused_decode import fused_decoder_of

from tests.llama.checkpoints import hf_model, write_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("tiny"), hf_model())


def test_load_warms_up_and_leaves_the_cache_empty(folder):
    model = inference_pio.load(folder, dtype="float32", max_batch_size=2, max_seq_len=64)
    try:
        engine = model.engine
        assert fused_decoder_of(engine.model) is not None, "the warm-up decode step did not build the plan"
        usage = engine.kv_cache.usage()
        assert usage.used_blocks == 0 and usage.num_seqs == 0
        [warm] = engine.generate([[5, 6, 7]], greedy(6, ignore_eos=True))
    finally:
        model.close()
    cold = inference_pio.load(folder, dtype="float32", max_batch_size=2, max_seq_len=64)
    try:
        [again] = cold.engine.generate([[5, 6, 7]], greedy(6, ignore_eos=True))
    finally:
        cold.close()
    assert warm.output_token_ids == again.output_token_ids


def test_switched_off_it_builds_nothing(folder, monkeypatch):
    monkeypatch.setenv(warmup.WARMUP_ENV, "0")
    model = inference_pio.load(folder, dtype="float32", max_batch_size=2, max_seq_len=64)
    try:
        assert fused_decoder_of(model.engine.model) is None
    finally:
        model.close()


def test_prefault_reads_every_storage_once():
    shared = torch.arange(10_000, dtype=torch.float32)
    module = torch.nn.Module()
    module.a = torch.nn.Parameter(shared[:5000], requires_grad=False)
    module.b = torch.nn.Parameter(shared[5000:], requires_grad=False)  # the same storage
    module.register_buffer("c", torch.ones(3, dtype=torch.bfloat16))
    assert warmup.prefault(module) == shared.numel() * 4 + 3 * 2


def test_a_model_that_cannot_run_a_step_loads_with_a_warning(folder, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("no step today")

    from inference_pio.plugins.llama import Llama_Plugin

    model_class = Llama_Plugin.model_class
    monkeypatch.setattr(model_class, "forward", broken)
    with pytest.warns(UserWarning, match="warm-up at load skipped .*no step today"):
        model = inference_pio.load(folder, dtype="float32", max_batch_size=2, max_seq_len=64)
    try:
        assert model.engine.kv_cache.usage().num_seqs == 0
    finally:
        model.close()
