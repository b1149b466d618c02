#!/usr/bin/env bash
# Regenerates the gRPC/protobuf modules under src/ortserve/protos/ from protos/ with grpcio-tools (a test extra).
# The generated modules are committed; tests/grpc_api/test_generated_protos.py fails when they are out of date.
# Usage: scripts/generate_protos.sh [OUTPUT_ROOT]   (default: src)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(realpath -m "${1:-$ROOT/src}")"
PYTHON="$ROOT/.venv/bin/python"
cd "$ROOT/protos"
mapfile -t PROTOS < <(find ortserve/protos -name '*.proto' | sort)
mapfile -t SERVICES < <(grep -l '^service ' "${PROTOS[@]}")
find "$OUT/ortserve/protos" -name '*_pb2*.py*' -delete 2>/dev/null || true
mkdir -p "$OUT"
"$PYTHON" -m grpc_tools.protoc -I . --python_out="$OUT" --pyi_out="$OUT" "${PROTOS[@]}"
"$PYTHON" -m grpc_tools.protoc -I . --grpc_python_out="$OUT" "${SERVICES[@]}"
find "$OUT/ortserve/protos" -type d -exec touch {}/__init__.py \;
# Register in ortserve's own descriptor pool, not protobuf's default one (see src/ortserve/protos/_pool.py)
find "$OUT/ortserve/protos" -name '*_pb2.py' -exec sed -i \
  -e 's/^from google.protobuf import descriptor_pool as _descriptor_pool$/from ortserve.protos._pool import POOL/' \
  -e 's/_descriptor_pool.Default()/POOL/' {} +
