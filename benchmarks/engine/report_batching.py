"""Markdown table + PNG chart of the continuous-batching benchmark (tokens/s per concurrency).

    python benchmarks/engine/report_batching.py benchmarks/results/batching-cpu-DATE.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str) -> None:
    src = Path(path)
    data = json.loads(src.read_text())
    rows = sorted((b["extra_info"] for b in data["benchmarks"]), key=lambda r: r["concurrency"])
    machine = data.get("machine_info", {})
    base = rows[0]["tokens_per_s"]
    lines = [f"# Continuous batching throughput ({data.get('datetime', '')[:10]})", "",
             f"Model: {rows[0]['model']}; {rows[0]['threads']} threads; {machine.get('cpu', {}).get('brand_raw', '')}.",
             "Each request: 32-token prompt, 64 generated tokens (EOS ignored), all submitted at once to the",
             "AsyncEngine; median of 3 rounds after a warm-up.", "",
             "| concurrent requests | generated tokens/s | vs 1 request |", "| --- | --- | --- |"]
    lines += [f"| {r['concurrency']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base:.2f}x |" for r in rows]
    src.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([str(r["concurrency"]) for r in rows], [r["tokens_per_s"] for r in rows], color="#3a7")
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("generated tokens/s")
    ax.set_title("Continuous batching, CPU")
    fig.tight_layout()
    fig.savefig(src.with_suffix(".png"), dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
