"""Turns a pytest-benchmark JSON file into a markdown table and a PNG chart.

    python benchmarks/report.py RESULTS.json [--out-dir DIR]

Writes ``DIR/<name>.md`` (one section per benchmark group: backend, median time, speed-up
over the group's torch baseline, GB/s and % of the measured copy bandwidth, GFLOP/s) and
``DIR/<name>.png`` (speed-up over torch per group and backend). DIR defaults to the JSON's
folder. The baseline of a group is its backend whose name starts with "torch" (transformers'
eager code); speed-up = baseline median / median, so above 1 is faster than torch.
matplotlib is imported only for the chart: without it the table is still written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

BASELINE_PREFIX = "torch"


@dataclass
class Row:
    backend: str
    median_s: float
    gbs: float | None
    fraction_of_copy_bw: float | None
    gflops: float | None
    speedup: float | None = None  # baseline median / median; None without a baseline


@dataclass
class Group:
    name: str
    rows: list[Row]
    baseline: str | None


def _backend_of(bench: dict) -> str:
    info = bench.get("extra_info") or {}
    params = bench.get("params") or {}
    return str(info.get("backend") or params.get("backend") or bench.get("name", "?"))


def load_groups(results: dict) -> list[Group]:
    """Groups in first-seen order, rows in first-seen order, speed-ups filled in."""
    by_group: dict[str, list[Row]] = {}
    for bench in results.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        fraction = info.get("fraction_of_copy_bw")
        row = Row(
            backend=_backend_of(bench),
            median_s=float(bench["stats"]["median"]),
            gbs=info.get("gbs"),
            fraction_of_copy_bw=fraction,
            gflops=info.get("gflops"),
        )
        by_group.setdefault(bench.get("group") or bench.get("name", "ungrouped"), []).append(row)
    groups = []
    for name, rows in by_group.items():
        baseline = next((r for r in rows if r.backend.startswith(BASELINE_PREFIX)), None)
        if baseline is not None:
            for r in rows:
                r.speedup = baseline.median_s / r.median_s if r.median_s > 0 else math.inf
        groups.append(Group(name, rows, baseline.backend if baseline else None))
    return groups


def format_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; machines of the same kind differ), else what platform says."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        name = None
    return name or platform.processor() or platform.machine() or "unknown CPU"


def machine_header(results: dict) -> list[str]:
    """Markdown lines describing where the numbers were taken."""
    machine = results.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    infos = [b.get("extra_info") or {} for b in results.get("benchmarks", [])]
    copy_bw = next((i["copy_bandwidth_gbs"] for i in infos if "copy_bandwidth_gbs" in i), None)
    threads = next((i["threads"] for i in infos if "threads" in i), None)
    cpu_name = cpu.get("brand_raw") or machine.get("processor") or "unknown CPU"
    if cpu.get("count"):
        cpu_name += f" ({cpu['count']} logical CPUs)"
    return [
        f"- CPU: {cpu_name}",
        f"- date: {results.get('datetime', 'unknown')}",
        f"- copy bandwidth (read + write): {_fmt(copy_bw, '.1f', ' GB/s')}",
        f"- threads: {_fmt(threads, 'd')}",
        f"- python {machine.get('python_version', '?')}, pytest-benchmark {results.get('version', '?')}",
    ]


def markdown(results: dict, groups: list[Group], title: str) -> str:
    lines = [f"# Benchmarks: {title}", "", *machine_header(results), ""]
    lines.append(f"Speed-up: the {BASELINE_PREFIX}* baseline's median time / this backend's (above 1 is faster).")
    for g in groups:
        lines += ["", f"## {g.name}", ""]
        show_flops = any(r.gflops is not None for r in g.rows)
        header = ["backend", "median", f"speed-up vs {g.baseline or 'torch (none)'}", "GB/s", "% of copy BW"]
        header += ["GFLOP/s"] if show_flops else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in g.rows:
            pct = None if r.fraction_of_copy_bw is None else 100 * r.fraction_of_copy_bw
            cells = [r.backend, format_time(r.median_s), _fmt(r.speedup, ".2f", "×")]
            cells += [_fmt(r.gbs, ".1f"), _fmt(pct, ".0f", "%")]
            cells += [_fmt(r.gflops, ".1f")] if show_flops else []
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(groups: list[Group], path: Path, title: str) -> bool:
    """Horizontal grouped bars of speed-up vs torch; False (and a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: skipping the chart (pip install matplotlib)", file=sys.stderr)
        return False
    groups = [g for g in groups if g.baseline is not None]
    if not groups:
        print(f"no group has a {BASELINE_PREFIX}* baseline: skipping the chart", file=sys.stderr)
        return False
    backends = list(dict.fromkeys(r.backend for g in groups for r in g.rows if r.backend != g.baseline))
    height = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.25 * max(1, len(backends)) * max(1, len(groups))))
    for i, backend in enumerate(backends):
        ys, xs = [], []
        for gi, g in enumerate(groups):
            row = next((r for r in g.rows if r.backend == backend), None)
            if row is not None and row.speedup is not None:
                ys.append(gi + i * height)
                xs.append(row.speedup)
        ax.barh(ys, xs, height=height, label=backend)
    ax.axvline(1.0, color="black", linewidth=0.8)
    centres = [gi + height * (len(backends) - 1) / 2 for gi in range(len(groups))]
    ax.set_yticks(centres, [g.name for g in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    times = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×")
    ax.xaxis.set_major_formatter(times)
    ax.xaxis.set_minor_formatter(times)
    ax.set_xlabel("speed-up vs torch eager (log scale; > 1 is faster)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--out-dir", type=Path, help="where to write the .md and .png (default: next to the JSON)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    out_dir = args.out_dir or args.results.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    title = args.results.stem
    groups = load_groups(results)
    for g in groups:
        best = min(g.rows, key=lambda r: r.median_s)
        vs = "" if best.speedup is None else f", {best.speedup:.2f}× vs {g.baseline}"
        print(f"{g.name}: {len(g.rows)} backends, fastest {best.backend} {format_time(best.median_s)}{vs}")
    md_path = out_dir / f"{title}.md"
    md_path.write_text(markdown(results, groups, title))
    print(f"wrote {md_path}")
    png_path = out_dir / f"{title}.png"
    if chart(groups, png_path, title):
        print(f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
