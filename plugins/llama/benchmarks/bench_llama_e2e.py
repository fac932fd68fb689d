"""End-to-end generation: our Llama plugin vs transformers' ``generate`` on the same random weights.

A random-weight model of TinyLlama-1.1B's shape (no download). Each implementation runs in its
own process (``--impl ours|hf``) so memory figures do not mix. Prefill time is the time to the
first token (``max_tokens=1``); decode time is the rest of a ``1 + new_tokens`` run.

    python plugins/llama/benchmarks/bench_llama_e2e.py --impl ours --dtype bfloat16
    python plugins/llama/benchmarks/bench_llama_e2e.py --impl hf --dtype bfloat16
    python plugins/llama/benchmarks/bench_llama_e2e.py --impl ours --profile   # one decode step
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time

import torch

TINYLLAMA = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                 rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def hf_model(dtype: torch.dtype, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**{**TINYLLAMA, "num_hidden_layers": layers})
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(dtype).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(0.02))
    model.rotary_emb.inv_freq = model.rotary_emb.original_inv_freq.clone()  # buffers lost on meta init
    return model


def ours_engine(dtype: torch.dtype, layers: int, batch: int, max_len: int):
    from inference_pio.engine import PagedKVCache
    from inference_pio.engine.generate import GenerationEngine
    from inference_pio.plugins.llama import LlamaConfig, LlamaModel

    hf = hf_model(dtype, layers)
    state = {k: v for k, v in hf.state_dict().items() if "rotary" not in k}
    del hf
    cfg = LlamaConfig.from_pretrained_config({**TINYLLAMA, "num_hidden_layers": layers},
                                             max_seq_len=max_len, max_batch_size=batch)
    model = LlamaModel(cfg, dtype)
    model.adopt_hf_state(state)
    gc.collect()
    blocks = batch * -(-max_len // cfg.kv_block_size)
    cache = PagedKVCache(layers, cfg.num_key_value_heads, cfg.head_dim, blocks, cfg.kv_block_size, dtype)
    return GenerationEngine(model, cache, max_model_len=max_len, prefill_budget=max(512, batch * max_len))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["ours", "hf"], default="ours")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="profile one batch decode step (ours)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, 32000, (args.batch, args.prompt_len), generator=gen)
    n = args.new_tokens

    if args.impl == "ours":
        from inference_pio.engine.generate import greedy

        engine = ours_engine(dtype, args.layers, args.batch, args.prompt_len + n + 8)
        ids = prompts.tolist()

        def run(k):
            return engine.generate(ids, greedy(k, ignore_eos=True))
        if args.profile:
            return profile_decode(engine, ids)
    else:
        model = hf_model(dtype, args.layers)

        def run(k):
            with torch.no_grad():
                return model.generate(prompts, max_new_tokens=k, min_new_tokens=k, do_sample=False,
                                      pad_token_id=0)
    rss_loaded = rss_mb()
    run(2)  # warm-up: buffers, caches, lazy inits
    prefill = min(timed(lambda: run(1)) for _ in range(args.repeats))
    full = min(timed(lambda: run(1 + n)) for _ in range(args.repeats))
    decode = full - prefill
    print(json.dumps({
        "impl": args.impl, "dtype": args.dtype, "batch": args.batch, "layers": args.layers,
        "prompt_len": args.prompt_len, "new_tokens": n, "threads": torch.get_num_threads(),
        "prefill_tok_s": round(args.batch * args.prompt_len / prefill, 1),
        "decode_tok_s": round(args.batch * n / decode, 2),
        "decode_ms_per_step": round(1000 * decode / n, 1),
        "rss_loaded_mb": round(rss_loaded), "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


def profile_decode(engine, ids) -> None:
    """Where one decode step's time goes: linear layers (aten mm) vs our kernels vs the rest."""
    from torch.profiler import ProfilerActivity, profile

    from inference_pio.engine.generate import greedy

    engine.generate(ids, greedy(4, ignore_eos=True))
    steps = 8
    t_all = timed(lambda: engine.generate(ids, greedy(1 + steps, ignore_eos=True)))
    t_pre = timed(lambda: engine.generate(ids, greedy(1, ignore_eos=True)))
    step_ms = 1000 * (t_all - t_pre) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate(ids, greedy(1 + steps, ignore_eos=True))
    table = prof.key_averages()
    mm = sum(e.self_cpu_time_total for e in table if e.key in ("aten::mm", "aten::addmm")) / 1000
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    print(json.dumps({"decode_step_ms": round(step_ms, 2),
                      "profiled_mm_ms_total": round(mm, 1), "profiled_steps": steps + 1}))


if __name__ == "__main__":
    main()
