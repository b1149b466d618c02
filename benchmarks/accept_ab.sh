#!/usr/bin/env bash
# The HTTP front end's accepting of connections, this tree against an earlier revision (both on the default
# uvloop, no config.yaml): two servers of the MLP 784-256-10 side by side, taking turns over three rounds. Points:
# TF Serving REST JSON from wrk -t2 -c256 (p99 and timeouts: a burst of new connections accepted slowly shows as
# a tail) and a new connection per request (wrk -H 'Connection: close', c=64).
#   bash benchmarks/accept_ab.sh 585d1e8   # the revision before server/listener.py
set -eu
cd "$(dirname "$0")/.."
BEFORE=${1:?give the git revision to compare with}
WORK=benchmarks/work/accept
rm -rf "$WORK/before"
mkdir -p "$WORK"
git worktree prune
git worktree add --detach "$WORK/before" "$BEFORE" > /dev/null
.venv/bin/python -c "from pathlib import Path; from ortserve.examples.models import mlp, save; save(mlp(), Path('$WORK/repository'), 'mlp')"
.venv/bin/python -c "import json; print(json.dumps({'instances': [[0.1] * 784]}))" > "$WORK/body.json"
printf 'wrk.method = "POST"\nwrk.body = io.open("%s"):read("a")\nwrk.headers["Content-Type"] = "application/json"\n' \
  "$WORK/body.json" > "$WORK/post.lua"
PYTHONPATH="$WORK/before/src" .venv/bin/python -m ortserve.cli serve "$WORK/repository" --rest-port 18520 \
  --grpc-port 18521 --model-control none > "$WORK/before.log" 2>&1 &
.venv/bin/ortserve serve "$WORK/repository" --rest-port 18530 --grpc-port 18531 --model-control none \
  > "$WORK/after.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null; git worktree remove --force "$WORK/before"' EXIT
sleep 10
URL=/v1/models/mlp:predict
point() {  # REST port, name
  local port=$1 c256 close
  c256=$(wrk -t2 -c256 -d5s --latency -s "$WORK/post.lua" "http://127.0.0.1:$port$URL" \
    | awk '/ 99%/{p=$2} /Requests\/sec/{r=$2} /timeout/{t=$NF} END{print r " req/s, p99 " p ", timeouts " (t ? t : 0)}')
  close=$(wrk -t2 -c64 -d5s -H 'Connection: close' -s "$WORK/post.lua" "http://127.0.0.1:$port$URL" \
    | awk '/Requests\/sec/{print $2}')
  echo "$2: c=256 $c256; Connection: close c=64 $close req/s"
}
for round in 1 2 3; do
  if (( round % 2 )); then point 18520 "before $BEFORE"; point 18530 after; else point 18530 after; point 18520 "before $BEFORE"; fi
done
