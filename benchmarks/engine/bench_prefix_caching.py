"""Automatic prefix caching: what a shared prompt prefix saves, caching on against caching off.

1. Time to first token of a request that shares a ``--prefix-tokens`` (1,000) token prefix with the
   request before it (each then adds its own 32-token question), on a fresh engine per measurement,
   the on and off runs interleaved; the first request's own time (a cold miss: hashing costs, nothing
   saved) is reported too.
2. An 8-turn chat (a system prompt, then per turn a user message and 32 generated tokens), rendered
   with the model's chat template when it has one: prompt tokens computed per turn with and without
   caching, and the whole conversation's time.

The model is the default SmolLM2-135M-Instruct GGUF (``--model`` names another checkpoint);
``--tiny`` uses a tiny random-weight Llama, for a smoke run in seconds. Only ratios measured in one
run mean anything on a busy machine.

    python -m benchmarks.engine.bench_prefix_caching --out benchmarks/results/prefix-caching-cpu-DATE.md
    python -m benchmarks.engine.bench_prefix_caching --tiny --prefix-tokens 100 --turns 3 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

QUESTION_TOKENS, ANSWER_TOKENS = 32, 32
TEXT = ("The history of computing is a story of people finding ways to make machines do arithmetic, then logic, "
        "then everything else. Early mechanical calculators gave way to electronic computers, which filled rooms "
        "and consumed enormous power; transistors and integrated circuits then shrank them onto a single chip. ")
QUESTIONS = ["What came first?", "Why did they shrink?", "Who built the early machines?", "What did they cost?",
             "How fast were they?", "What replaced the transistor?", "Where were they used?", "What comes next?"]


def tiny_checkpoint(folder: Path) -> Path:
    """A 2-layer random-weight Llama (no tokenizer): token ids stand in for text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


class Bench:
    """One loaded model; every measurement gets a fresh engine and KV cache over its weights."""

    def __init__(self, path: Path, max_len: int):
        import inference_pio

        self.model = inference_pio.load(path, max_seq_len=max_len, max_batch_size=1, num_kv_blocks=1)
        self.max_len = max_len
        self.tokenizer = self.model.plugin.tokenizer
        self.vocab = self.model.plugin.config.vocab_size

    def engine(self, caching: bool):
        from inference_pio.engine.generate import GenerationEngine

        src = self.model.plugin.kv_cache
        blocks = 2 * -(-self.max_len // src.block_size)
        cache = type(src)(src.num_layers, src.num_kv_heads, src.head_dim, blocks, src.block_size, src.dtype,
                          src.device)
        return GenerationEngine(self.model.plugin.model, cache, max_model_len=self.max_len, prefill_budget=self.max_len,
                                max_num_seqs=1, tokenizer=self.tokenizer, enable_prefix_caching=caching)

    def tokens(self, text: str, n: int, salt: int = 0) -> list[int]:
        """``n`` token ids of ``text`` repeated (of a deterministic id pattern without a tokenizer)."""
        if self.tokenizer is None:
            return [(31 * i + 7 * salt) % (self.vocab - 4) + 4 for i in range(n)]
        ids = self.tokenizer.encode(text, False)
        return (ids * (n // max(len(ids), 1) + 1))[:n]

    def close(self) -> None:
        self.model.close()


def _run(engine, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    from inference_pio.engine.generate import greedy

    start = time.perf_counter()
    [seq] = engine.generate([prompt], greedy(new_tokens, ignore_eos=True))
    return time.perf_counter() - start, seq.output_token_ids


def measure_ttft(bench: Bench, prefix_tokens: int, repeats: int) -> dict:
    """Seconds to the first token of the first request (cold) and the second (sharing the prefix)."""
    prefix = bench.tokens(TEXT, prefix_tokens)
    first = prefix + bench.tokens(QUESTIONS[0] + " ", QUESTION_TOKENS, salt=1)
    second = prefix + bench.tokens(QUESTIONS[1] + " ", QUESTION_TOKENS, salt=2)
    times: dict[str, dict[str, list[float]]] = {m: {"first": [], "second": []} for m in ("on", "off")}
    outputs = {}
    for _ in range(repeats + 1):  # the first round warms up (lazy initialisation, first-use allocations)
        for mode in ("off", "on"):
            engine = bench.engine(mode == "on")
            t_first, _ = _run(engine, first, 1)
            t_second, out = _run(engine, second, 1)
            times[mode]["first"].append(t_first)
            times[mode]["second"].append(t_second)
            outputs[mode] = out
            if mode == "on":
                hits = engine.stats()["prefix_cache_hits"]  # all of them the second request's
    result = {"prefix_tokens": prefix_tokens, "prompt_tokens": len(second), "same_first_token":
              outputs["on"] == outputs["off"], "second_prompt_tokens_computed_on": len(second) - hits}
    for mode in ("on", "off"):
        for which in ("first", "second"):
            result[f"ttft_{which}_{mode}_s"] = statistics.median(times[mode][which][1:])
    result["ttft_speedup"] = result["ttft_second_off_s"] / result["ttft_second_on_s"]
    result["cold_overhead"] = result["ttft_first_on_s"] / result["ttft_first_off_s"]
    return result


def chat_prompts(bench: Bench, turns: int, answers: list[list[int]]) -> list[int]:
    """The prompt of turn ``len(answers)``: the conversation so far, rendered by the chat template."""
    system = "You are a patient history teacher. " + TEXT * 2
    if bench.tokenizer is None or not getattr(bench.tokenizer, "chat_template", None):
        ids = bench.tokens(system, 200)
        for k, answer in enumerate(answers + [None]):
            ids = ids + bench.tokens(QUESTIONS[k % len(QUESTIONS)], 12, salt=k + 3)
            if answer is not None:
                ids = ids + answer
        return ids
    messages = [{"role": "system", "content": system}]
    for k, answer in enumerate(answers + [None]):
        messages.append({"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]})
        if answer is not None:
            messages.append({"role": "assistant", "content": bench.tokenizer.decode(answer, True)})
    return bench.model.apply_chat_template(messages)


def measure_chat(bench: Bench, turns: int) -> dict:
    """Per-turn prompt tokens and prompt tokens computed; the conversation's seconds; on then off."""
    result: dict = {"turns": turns}
    for mode in ("off", "on"):
        engine = bench.engine(mode == "on")
        answers: list[list[int]] = []
        prompt_tokens, computed = [], []
        start = time.perf_counter()
        for _ in range(turns):
            prompt = chat_prompts(bench, turns, answers)
            before = engine.stats()
            _, answer = _run(engine, prompt, ANSWER_TOKENS)
            after = engine.stats()
            hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
            prompt_tokens.append(len(prompt))
            computed.append(len(prompt) - hits)
            answers.append(answer)
        result[f"seconds_{mode}"] = time.perf_counter() - start
        result[f"prompt_tokens_{mode}"] = prompt_tokens
        result[f"computed_{mode}"] = computed
        result[f"answers_{mode}"] = answers
    result["same_answers"] = result.pop("answers_on") == result.pop("answers_off")
    result["computed_fraction"] = sum(result["computed_on"]) / sum(result["computed_off"])
    result["time_ratio"] = result["seconds_off"] / result["seconds_on"]
    return result


def report(meta: dict, ttft: dict, chat: dict, out: Path) -> str:
    lines = [f"# Prefix caching: {meta['model']}", "",
             f"{meta['date']}, {meta['cpu']}, {meta['threads']} thread(s), load average {meta['load']} at the start; "
             f"median of {meta['repeats']} interleaved runs.", "",
             f"## Time to first token, {ttft['prefix_tokens']}-token shared prefix "
             f"({ttft['prompt_tokens']}-token prompts)", "",
             "| | caching off | caching on | off / on |", "| --- | ---: | ---: | ---: |",
             f"| second request (shares the prefix) | {ttft['ttft_second_off_s'] * 1e3:.1f} ms | "
             f"{ttft['ttft_second_on_s'] * 1e3:.1f} ms | {ttft['ttft_speedup']:.2f}x |",
             f"| first request (cold) | {ttft['ttft_first_off_s'] * 1e3:.1f} ms | "
             f"{ttft['ttft_first_on_s'] * 1e3:.1f} ms | {1 / ttft['cold_overhead']:.2f}x |", "",
             f"With caching the second request computed {ttft['second_prompt_tokens_computed_on']} of its "
             f"{ttft['prompt_tokens']} prompt tokens; same first token on and off: {ttft['same_first_token']}.", "",
             f"## {chat['turns']}-turn chat ({ANSWER_TOKENS} tokens generated per turn)", "",
             "| turn | prompt tokens | computed, off | computed, on |", "| ---: | ---: | ---: | ---: |"]
    for k, (n, off, on) in enumerate(zip(chat["prompt_tokens_off"], chat["computed_off"], chat["computed_on"])):
        lines.append(f"| {k + 1} | {n} | {off} | {on} |")
    lines += [f"| all | {sum(chat['prompt_tokens_off'])} | {sum(chat['computed_off'])} | {sum(chat['computed_on'])} |",
              "", f"Caching computed {chat['computed_fraction']:.0%} of the prompt tokens; the conversation took "
              f"{chat['seconds_off']:.2f} s off and {chat['seconds_on']:.2f} s on ({chat['time_ratio']:.2f}x); "
              f"same answers on and off: {chat['same_answers']}.", "", f"![chart]({out.with_suffix('.png').name})"]
    return "\n".join(lines) + "\n"


def chart(ttft: dict, chat: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.bar(["off", "on"], [ttft["ttft_second_off_s"] * 1e3, ttft["ttft_second_on_s"] * 1e3], color=["#999", "#3a7"])
    left.set_title(f"TTFT, {ttft['prefix_tokens']}-token shared prefix")
    left.set_ylabel("ms")
    turns = range(1, chat["turns"] + 1)
    right.plot(turns, chat["computed_off"], "o-", color="#999", label="caching off")
    right.plot(turns, chat["computed_on"], "o-", color="#3a7", label="caching on")
    right.set_title("chat: prompt tokens computed per turn")
    right.set_xlabel("turn")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the default SmolLM2 GGUF)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead (smoke run)")
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write OUT.md, OUT.json and OUT.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            path, label = tiny_checkpoint(Path(tmp)), "tiny random Llama (smoke run)"
        else:
            from inference_pio.defaults import default_model_path

            path = args.model or default_model_path()
            label = path.name
        bench = Bench(path, max_len=max(args.prefix_tokens + 2 * QUESTION_TOKENS, 2048) + 16)
        try:
            ttft = measure_ttft(bench, args.prefix_tokens, args.repeats)
            print(json.dumps(ttft), flush=True)
            chat = measure_chat(bench, args.turns)
            print(json.dumps(chat), flush=True)
        finally:
            bench.close()
    meta = {"model": label, "date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
            "threads": args.threads, "load": f"{load:.1f}", "repeats": args.repeats}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = report(meta, ttft, chat, args.out)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "ttft": ttft, "chat": chat}, indent=1))
        chart(ttft, chat, args.out.with_suffix(".png"), f"{label}, {args.threads} thread(s)")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
