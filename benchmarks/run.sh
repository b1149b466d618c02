#!/usr/bin/env bash
# Installs the load generators (Debian's wrk; perf_analyzer from the tritonclient 2.50 wheel, with libb64 and
# libcudart 12), then runs the serving benchmark. Usage: bash benchmarks/run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=benchmarks/tools
mkdir -p "$TOOLS"
if ! command -v wrk >/dev/null || ! ldconfig -p | grep -q libb64.so.0d; then
  apt-get update -qq && apt-get install -y -qq wrk libb64-0d >/dev/null
fi
PA="$TOOLS/tritonclient-2.50.0.data/data/bin/perf_analyzer"
CUDA_LIB="$PWD/$TOOLS/nvidia/cuda_runtime/lib"
if [ ! -x "$PA" ] || [ ! -e "$CUDA_LIB/libcudart.so.12" ]; then
  .venv/bin/python -m pip download --quiet --no-deps -d "$TOOLS/wheels" tritonclient==2.50.0 \
    nvidia-cuda-runtime-cu12==12.9.79
  for wheel in "$TOOLS"/wheels/*.whl; do .venv/bin/python -m zipfile -e "$wheel" "$TOOLS"; done
  chmod +x "$PA"
fi
.venv/bin/python benchmarks/serving.py --perf-analyzer "$PA" --cuda-lib "$CUDA_LIB" "$@"
