#!/bin/bash
# A/B of the HTTP path between source trees: each tree's server (PYTHONPATH=TREE) serves an MLP 784-256-10, then
# wrk posts one-row TF Serving JSON requests at c=8 for 8 s after 3 s of warmup; prints req/s per tree, in order.
#   bash benchmarks/http_ab.sh /tmp/before/src src /tmp/before/src src
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python -c "from ortserve.examples.models import mlp, save; from pathlib import Path; save(mlp(), Path('$WORK/repo'), 'mlp')"
python3 -c "import json; print(json.dumps({'instances': [[0.0] * 784]}))" > "$WORK/row.json"
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$WORK/row.json", "r"); wrk.body = f:read("*all"); f:close()
wrk.headers["Content-Type"] = "application/json"
LUA
for tree in "$@"; do
  PYTHONPATH=$tree .venv/bin/python -m ortserve serve "$WORK/repo" --rest-port 18501 --grpc-port 18500 \
    > "$WORK/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf localhost:18501/v2/health/ready > /dev/null && break; sleep 0.2; done
  wrk -t1 -c8 -d3s -s "$WORK/post.lua" http://127.0.0.1:18501/v1/models/mlp:predict > /dev/null
  echo "$tree $(wrk -t1 -c8 -d8s -s "$WORK/post.lua" http://127.0.0.1:18501/v1/models/mlp:predict | grep Requests/sec)"
  kill "$server"; wait "$server" 2>/dev/null || true
done
