"""Registers, shared memory and spills of the CUDA kernels, from ``nvcc -Xptxas -v`` (no GPU needed).

    python benchmarks/gpu/ptxas_report.py --out benchmarks/results/cuda-ptxas-<date>.md

Compiles each csrc/kernels/cuda/*.cu for sm_80 and sm_90 with the build's flags and tabulates what
ptxas reports per kernel instantiation. Hot kernels must not spill.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USAGE = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


def demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return [re.sub(r"pio::cuda::\(anonymous namespace\)::", "", n) for n in out.splitlines()]


def ptxas(source: Path, arch: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["nvcc", "-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-I{ROOT / 'csrc/include'}",
               f"-I{ROOT / 'csrc'}", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-Xptxas", "-v", "-c",
               str(source), "-o", str(Path(tmp) / "k.o")]
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    rows, current = [], None
    for line in log.splitlines():
        if m := ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": m.group(2), "file": source.name}
            rows.append(current)
        elif current and (m := SPILL.search(line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current and (m := USAGE.search(line)):
            current.update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
    names = demangle([r["kernel"] for r in rows])
    for r, n in zip(rows, names):
        r["kernel"] = n
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="markdown file to write (default: print)")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        print("nvcc not found", file=sys.stderr)
        return 2
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    rows = [r for src in sorted((ROOT / "csrc/kernels/cuda").glob("*.cu")) for arch in ("80", "90")
            for r in ptxas(src, arch)]
    lines = [f"# CUDA kernels: ptxas resource usage ({datetime.date.today()})", "",
             f"{version}; `-O3`, one row per kernel instantiation. Static shared memory only (the prefill",
             "tensor-core kernel also takes dynamic shared memory: 108 KB at head_dim 128 with 4 warps,",
             "118 KB at head_dim 256 with 2 warps).", "",
             "| file | kernel | arch | registers | static smem (B) | stack (B) | spill stores / loads (B) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['file']} | `{r['kernel']}` | {r['arch']} | {r.get('registers', '?')} | {r.get('smem', 0)} | "
                     f"{r.get('stack', '?')} | {r.get('spill_stores', '?')} / {r.get('spill_loads', '?')} |")
    spills = [r for r in rows if r.get("spill_stores") or r.get("spill_loads")]
    lines += ["", f"Kernels that spill: {len(spills)} of {len(rows)}."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
