#!/usr/bin/env bash
# The GPU session's checks in one run (see benchmarks/gpu/README.md): build with the CUDA extension,
# the op tests on the GPU (cuda and triton backends against the float64 reference), compute-sanitizer
# memcheck over the CUDA backend's tests, then the op benchmark. Results go to ${OUT:-benchmarks/results}.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-benchmarks/results}"
date="$(date -u +%F)"
mkdir -p "$out"
PIO_CUDA=ON python -m pip install --no-build-isolation --no-deps -q . 2>&1 | tail -3
python -c "import inference_pio._cuda as c; print('cuda extension:', c.archs, 'devices:', c.device_count())"
python -m pytest tests/ops tests/kernels -q -x -p no:cacheprovider 2>&1 | tee "$out/gpu-tests-$date.log" | tail -5
if command -v compute-sanitizer >/dev/null 2>&1; then
  compute-sanitizer --tool memcheck --error-exitcode 3 python -m pytest tests/ops -q -x -p no:cacheprovider \
    -k "cuda and not (2048 or 1000)" 2>&1 | tee "$out/gpu-memcheck-$date.log" | tail -5
else
  echo "compute-sanitizer not found: memcheck skipped" | tee "$out/gpu-memcheck-$date.log"
fi
device="$(python -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")"
python benchmarks/gpu/bench_gpu_ops.py --out "$out/gpu-$device-$date.md"
