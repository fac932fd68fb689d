"""One rank of a tensor-parallel test run: ``python -m tests.distributed.tp_worker RANK WORLD PORT CKPT OUT MODE``.

CKPT is a safetensors checkpoint folder or a ``.gguf`` file (each rank then reads its slices of the GGUF).

``parity``: teacher-forced float32 logits (one prefill, then decode steps) and a greedy continuation
through the sharded model and this rank's KV-cache shard; rank 0 writes them to OUT (safetensors + JSON).
``engine``: rank 0 runs a ``GenerationEngine`` over ``LeaderModel`` while rank 1 follows its steps;
rank 0 writes the generated tokens.
``plugin``: like ``engine``, but each rank loads CKPT through ``inference_pio.load(..., tensor_parallel_size=WORLD)``
(the plugin's tensor-parallel hook), as ``pio serve --tensor-parallel-size`` does.
``die``: rank 1 exits at once; rank 0's first collective must fail within the group's timeout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from inference_pio.distributed.tp_steps import LeaderModel, follow
from inference_pio.distributed.tensor_parallel import (init_tensor_parallel, shard_config, shutdown_tensor_parallel,
                                                       tensor_parallel_model)
from inference_pio.engine import PagedKVCache
from inference_pio.plugins.llama.config import LlamaConfig
from inference_pio.plugins.llama.model import LlamaModel
from inference_pio.weights.gguf_file import open_gguf
from tests.distributed.tp_workload import PROMPT_LEN, TOKENS, engine_tokens, greedy
from tests.llama.checkpoints import BLOCK, teacher_forced_logits


def main(rank: int, world: int, port: int, checkpoint: str, out: str, mode: str) -> None:
    init_tensor_parallel(rank, world, f"tcp://127.0.0.1:{port}", "gloo", timeout_s=20 if mode == "die" else 120)
    if mode == "die" and rank == 1:
        os._exit(3)
    if mode == "plugin":
        return through_the_plugin(rank, world, checkpoint, out)
    gguf = open_gguf(checkpoint) if checkpoint.endswith(".gguf") else None
    cfg = LlamaConfig.from_gguf(gguf, dtype="float32", max_seq_len=256) if gguf \
        else LlamaConfig.from_checkpoint(checkpoint, dtype="float32", max_seq_len=256)
    model = tensor_parallel_model(LlamaModel, cfg, rank, world, gguf=gguf)
    local = shard_config(cfg, world)
    cache = PagedKVCache(cfg.num_hidden_layers, local.num_key_value_heads, cfg.head_dim, 64, BLOCK, torch.float32)
    if mode == "engine":
        if rank == 0:
            leader = LeaderModel(model)
            tokens = engine_tokens(leader, cache)
            leader.stop()
            (Path(out) / "engine.json").write_text(json.dumps(tokens))
        else:
            print(f"rank {rank} followed {follow(model, cache)} steps")
        return
    shard = SimpleNamespace(model=model, kv_cache=cache)
    logits = teacher_forced_logits(shard, TOKENS, PROMPT_LEN)
    tokens = greedy(shard, TOKENS[:PROMPT_LEN], 24)
    if rank == 0:
        from safetensors.torch import save_file

        save_file({"logits": logits.contiguous()}, str(Path(out) / "logits.safetensors"))
        (Path(out) / "greedy.json").write_text(json.dumps(tokens))


def through_the_plugin(rank: int, world: int, checkpoint: str, out: str) -> None:
    import inference_pio

    plugin = inference_pio.load(checkpoint, dtype="float32", max_seq_len=256, max_batch_size=4,
                                tensor_parallel_size=world).plugin
    if rank == 0:
        leader = plugin.engine.model  # the plugin wrapped rank 0's model in a LeaderModel
        tokens = engine_tokens(leader, plugin.kv_cache)
        leader.stop()
        (Path(out) / "engine.json").write_text(json.dumps(tokens))
    else:
        print(f"rank {rank} followed {follow(plugin.model, plugin.kv_cache)} steps")


if __name__ == "__main__":
    rank, world, port = (int(a) for a in sys.argv[1:4])
    try:
        main(rank, world, port, *sys.argv[4:7])
    finally:
        shutdown_tensor_parallel()
