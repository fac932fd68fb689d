"""TP=2 over gloo (two processes) against TP=1 on a tiny random Llama: same logits, same greedy tokens."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from inference_pio.distributed.tensor_parallel import shard_config
from inference_pio.plugins.llama.config import LlamaConfig
from inference_pio.plugins.llama.plugin import Llama_Plugin
from tests.distributed.tp_workload import PROMPT_LEN, TOKENS, engine_tokens, greedy
from tests.llama.checkpoints import hf_model, load_plugin, teacher_forced_logits, write_checkpoint
from tests.server.serving import free_port

REPO = __file__.rsplit("/tests/", 1)[0]


def run_ranks(checkpoint, out, mode: str, world: int = 2, timeout: float = 240):
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.distributed.tp_worker", str(r), str(world), str(port),
                               str(checkpoint), str(out), mode], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    deadline = time.monotonic() + timeout
    results = []
    for p in procs:
        try:
            output, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a rank hung past {timeout} s")
        results.append((p.returncode, output))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("bias", [False, True], ids=["llama", "attention-bias"])
def test_tp2_matches_tp1_logits_and_greedy_tokens(tmp_path, bias):
    # GQA: 4 query heads over 2 KV heads, so each rank holds 2 heads and 1 KV head; odd vocab (501).
    ckpt = write_checkpoint(tmp_path / "ckpt", hf_model(seed=3, vocab_size=501, attention_bias=bias))
    results = run_ranks(ckpt, tmp_path, "parity")
    assert all(rc == 0 for rc, _ in results), results
    from safetensors.torch import load_file

    tp_logits = load_file(str(tmp_path / "logits.safetensors"))["logits"]
    reference = load_plugin(Llama_Plugin, ckpt)
    expected = teacher_forced_logits(reference, TOKENS, PROMPT_LEN)
    torch.testing.assert_close(tp_logits, expected, rtol=0, atol=1e-4)
    assert json.loads((tmp_path / "greedy.json").read_text()) == greedy(reference, TOKENS[:PROMPT_LEN], 24)


@pytest.mark.slow
def test_rank0_engine_with_a_follower_generates_what_tp1_does(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", hf_model(seed=4), tokenizer=False)
    results = run_ranks(ckpt, tmp_path, "engine")
    assert all(rc == 0 for rc, _ in results), results
    assert "followed" in results[1][1]
    reference = load_plugin(Llama_Plugin, ckpt)
    expected = engine_tokens(reference.model, reference.kv_cache)
    assert json.loads((tmp_path / "engine.json").read_text()) == expected


def test_kv_heads_that_do_not_split_are_refused(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", hf_model(num_attention_heads=6, num_key_value_heads=3, hidden_size=96,
                                                                 intermediate_size=192),
                            tokenizer=False)
    cfg = LlamaConfig.from_checkpoint(ckpt, dtype="float32")
    with pytest.raises(ValueError, match=r"num_key_value_heads \(3\) to be a multiple of 2 \(replicating"):
        shard_config(cfg, 2)
    local = shard_config(cfg, 3)
    assert (local.num_attention_heads, local.num_key_value_heads, local.head_dim) == (2, 1, cfg.head_dim)


@pytest.mark.slow
def test_a_dead_rank_makes_the_other_fail_instead_of_hanging(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt", hf_model(seed=1), tokenizer=False)
    (rc0, out0), (rc1, _) = run_ranks(ckpt, tmp_path, "die", timeout=120)
    assert rc1 == 3
    assert rc0 != 0 and ("Error" in out0 or "error" in out0), out0[-2000:]
