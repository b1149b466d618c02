#!/usr/bin/env bash
# The HTTP front end on uvloop against asyncio's own loop: two servers of the MLP 784-256-10 side by side (no
# config.yaml), taking turns over four rounds: TF Serving REST JSON at c=1 (p50), c=8 and c=256 (wrk), V2 gRPC
# at c=8 (perf_analyzer). Needs wrk and perf_analyzer (bash benchmarks/run.sh installs them).
#   bash benchmarks/event_loop_ab.sh
set -eu  # no pipefail: a tool that ends non-zero (perf_analyzer that cannot settle) leaves its figure empty
cd "$(dirname "$0")/.."
WORK=benchmarks/work/event_loop
PA=benchmarks/tools/tritonclient-2.50.0.data/data/bin/perf_analyzer
export LD_LIBRARY_PATH=$PWD/benchmarks/tools/nvidia/cuda_runtime/lib
.venv/bin/python -c "from pathlib import Path; from ortserve.examples.models import mlp, save; save(mlp(), Path('$WORK/repository'), 'mlp')"
.venv/bin/python -c "import json; print(json.dumps({'instances': [[0.1] * 784]}))" > "$WORK/body.json"
printf 'wrk.method = "POST"\nwrk.body = io.open("%s"):read("a")\nwrk.headers["Content-Type"] = "application/json"\n' \
  "$WORK/body.json" > "$WORK/post.lua"
.venv/bin/ortserve serve "$WORK/repository" --rest-port 18500 --grpc-port 18501 --model-control none \
  > "$WORK/uvloop.log" 2>&1 &
.venv/bin/ortserve serve "$WORK/repository" --rest-port 18510 --grpc-port 18511 --model-control none \
  --event-loop asyncio > "$WORK/asyncio.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null' EXIT
sleep 10
URL=/v1/models/mlp:predict
point() {  # REST port, name
  local port=$1 c1 c8 c256 g8
  c1=$(wrk -t1 -c1 -d4s --latency -s "$WORK/post.lua" "http://127.0.0.1:$port$URL" | awk '/ 50%/{print $2}')
  c8=$(wrk -t2 -c8 -d4s -s "$WORK/post.lua" "http://127.0.0.1:$port$URL" | awk '/Requests\/sec/{print $2}')
  c256=$(wrk -t2 -c256 -d5s --latency -s "$WORK/post.lua" "http://127.0.0.1:$port$URL" \
    | awk '/ 99%/{p=$2} /Requests\/sec/{r=$2} /timeout/{t=$NF} END{print r " req/s, p99 " p ", timeouts " (t ? t : 0)}')
  g8=$("$PA" -m mlp -u "127.0.0.1:$(($port + 1))" -i grpc --concurrency-range 8 -p 3000 --shape input:1,784 2>&1 \
    | awk '/Throughput:/{print $(NF-1); exit}')
  echo "$2: REST c=1 p50 $c1; c=8 $c8 req/s; c=256 $c256; V2 gRPC c=8 $g8 req/s"
}
for round in 1 2 3 4; do
  if (( round % 2 )); then point 18500 uvloop; point 18510 asyncio; else point 18510 asyncio; point 18500 uvloop; fi
done
