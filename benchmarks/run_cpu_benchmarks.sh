#!/usr/bin/env bash
# Runs the CPU op benchmarks and writes the report next to the JSON in benchmarks/results/.
# Extra arguments go to pytest, e.g.:  benchmarks/run_cpu_benchmarks.sh -k silu
#                                      benchmarks/run_cpu_benchmarks.sh benchmarks/ops/bench_activation.py
# PYTHON selects the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
mkdir -p benchmarks/results
json="benchmarks/results/cpu-$(date +%F).json"
targets=(benchmarks/ops)
# A path among the extra arguments replaces the default target (pytest would run both).
for arg in "$@"; do
  if [[ "$arg" != -* && -e "$arg" ]]; then targets=(); break; fi
done
"$PYTHON" -m pytest "${targets[@]}" --benchmark-warmup=on --benchmark-min-rounds=5 \
  --benchmark-json="$json" -q "$@"
"$PYTHON" benchmarks/report.py "$json" --out-dir benchmarks/results
