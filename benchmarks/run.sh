#!/usr/bin/env bash
# Installs the load generators (Debian's wrk; perf_analyzer from the tritonclient 2.50 wheel, with libb64 and
# libcudart 12; g++ and grpc++ for the open-loop generator), then runs a benchmark script with them.
# Usage: bash benchmarks/run.sh [SCRIPT.py] [ARGS...]   (default: serving.py; load.py: behaviour under load)
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT=serving.py
if [[ "${1:-}" == *.py ]]; then SCRIPT=$1; shift; fi
TOOLS=benchmarks/tools
mkdir -p "$TOOLS"
if ! command -v wrk >/dev/null || ! ldconfig -p | grep -q libb64.so.0d || ! pkg-config --exists grpc++; then
  apt-get update -qq && apt-get install -y -qq wrk libb64-0d g++ pkg-config libgrpc++-dev >/dev/null
fi
PA="$TOOLS/tritonclient-2.50.0.data/data/bin/perf_analyzer"
CUDA_LIB="$PWD/$TOOLS/nvidia/cuda_runtime/lib"
if [ ! -x "$PA" ] || [ ! -e "$CUDA_LIB/libcudart.so.12" ]; then
  .venv/bin/python -m pip download --quiet --no-deps -d "$TOOLS/wheels" tritonclient==2.50.0 \
    nvidia-cuda-runtime-cu12==12.9.79
  for wheel in "$TOOLS"/wheels/*.whl; do .venv/bin/python -m zipfile -e "$wheel" "$TOOLS"; done
  chmod +x "$PA"
fi
.venv/bin/python "benchmarks/$SCRIPT" --perf-analyzer "$PA" --cuda-lib "$CUDA_LIB" "$@"
