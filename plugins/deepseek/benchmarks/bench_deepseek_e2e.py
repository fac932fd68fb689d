"""End-to-end generation: our DeepSeek plugin vs transformers' ``generate`` on the same random weights.

A random-weight DeepSeek-V2-style model, small enough for a laptop (no download): MLA with a latent
cache, a dense first layer, then shared + routed experts. The checkpoint is written by
transformers and loaded by the plugin, and both run in one process. Prefill time is the time to
the first token (``max_tokens=1``); decode time is the rest of a ``1 + new_tokens`` run. Also
reported: KV-cache bytes per token, ours (latent) and transformers' (its cache keeps the latent too;
an expanded-heads cache would need the ``expanded_kv_bytes_per_token`` shown).

    python plugins/deepseek/benchmarks/bench_deepseek_e2e.py --dtype bfloat16
    python plugins/deepseek/benchmarks/bench_deepseek_e2e.py --version 3 --kv-lora-rank 512  # torch attention path
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

SHAPE = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512,
             num_hidden_layers=6, num_attention_heads=8, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
             n_routed_experts=16, num_experts_per_tok=4, n_shared_experts=2, first_k_dense_replace=1,
             max_position_embeddings=4096, bos_token_id=1, eos_token_id=2)


def hf_model(version: int, kv_lora_rank: int, layers: int):
    import transformers

    extra = (dict(q_lora_rank=None, topk_method="greedy") if version == 2 else
             dict(q_lora_rank=384, n_group=4, topk_group=2, num_key_value_heads=SHAPE["num_attention_heads"]))
    cfg = getattr(transformers, f"DeepseekV{version}Config")(**{**SHAPE, "num_hidden_layers": layers,
                                                                "kv_lora_rank": kv_lora_rank, **extra})
    torch.manual_seed(0)
    model = getattr(transformers, f"DeepseekV{version}ForCausalLM")(cfg).eval()
    with torch.no_grad():  # transformers' 0.02 init gives near-uniform routing; a wider draw separates experts
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.05)
    return model


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", type=int, choices=[2, 3], default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--kv-lora-rank", type=int, default=224, help="latent row = this + 32; <= 224 uses the kernels")
    ap.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from inference_pio.engine.generate import greedy
    from inference_pio.plugins.deepseek import DeepSeek_Plugin

    dtype = getattr(torch, args.dtype)
    print("building the random-weight model and its checkpoint...", file=sys.stderr)
    hf = hf_model(args.version, args.kv_lora_rank, args.layers)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        hf = hf.to(dtype)
        plugin = DeepSeek_Plugin()
        plugin.load(model_path=folder, dtype=args.dtype, max_batch_size=args.batch,
                    max_seq_len=args.prompt_len + args.new_tokens + 8, prefill_budget=args.batch * args.prompt_len)
    engine, cfg = plugin.engine, plugin.config
    gen = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, SHAPE["vocab_size"], (args.batch, args.prompt_len), generator=gen)
    ids, n = prompts.tolist(), args.new_tokens

    def ours(k):
        return engine.generate(ids, greedy(k, ignore_eos=True))

    def theirs(k):
        with torch.no_grad():
            return hf.generate(prompts, max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=0)

    results = {}
    for name, run in (("ours", ours), ("transformers", theirs)):
        run(2)  # warm-up: buffers, caches, lazy inits
        results[name] = {"prefill": [], "full": []}
    for r in range(args.repeats):  # interleaved, best of N: the minimum is least disturbed by other processes
        print(f"repeat {r + 1}/{args.repeats}", file=sys.stderr)
        for name, run in (("ours", ours), ("transformers", theirs)):
            results[name]["prefill"].append(timed(lambda: run(1)))
            results[name]["full"].append(timed(lambda: run(1 + n)))
    elem = torch.empty((), dtype=dtype).element_size()
    report = {"version": args.version, "dtype": args.dtype, "batch": args.batch, "layers": args.layers,
              "prompt_len": args.prompt_len, "new_tokens": n, "threads": torch.get_num_threads(),
              "latent_row": cfg.latent_dim, "attention": "kernels" if plugin.model.layers[0].self_attn.use_kernels else "torch",
              "kv_bytes_per_token": cfg.num_hidden_layers * cfg.latent_dim * elem,
              "expanded_kv_bytes_per_token": cfg.num_hidden_layers * cfg.num_attention_heads
              * (cfg.qk_head_dim + cfg.v_head_dim) * elem}
    for name, r in results.items():
        prefill, decode = min(r["prefill"]), min(r["full"]) - min(r["prefill"])
        report[name] = {"prefill_tok_s": round(args.batch * args.prompt_len / prefill, 1),
                        "decode_tok_s": round(args.batch * n / decode, 2),
                        "decode_ms_per_step": round(1000 * decode / n, 1)}
    report["decode_speedup"] = round(report["ours"]["decode_tok_s"] / report["transformers"]["decode_tok_s"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
