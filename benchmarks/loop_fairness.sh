#!/usr/bin/env bash
# Which event loop keeps the tail of 256 connections short, and with which client: a bare protocol
# (benchmarks/loop_fairness.py, 40 us a request, no uvicorn, no ortserve) on uvloop and on asyncio, against wrk
# with one thread and with two, three rounds in turn. Needs wrk.
#   bash benchmarks/loop_fairness.sh
set -eu
cd "$(dirname "$0")/.."
for round in 1 2 3; do
  for loop in uvloop asyncio; do
    .venv/bin/python benchmarks/loop_fairness.py --loop "$loop" --port 18601 2>&1 &
    server=$!
    sleep 1.5
    for threads in 1 2; do
      echo "round $round, $loop, wrk -t$threads -c256: $(wrk -t$threads -c256 -d5s --latency http://127.0.0.1:18601/ \
        | awk '/ 99%/{p=$2} /Requests\/sec/{r=$2} /timeout/{t=$NF} END{print r " req/s, p99 " p ", timeouts " (t ? t : 0)}')"
    done
    kill $server
    wait $server 2>/dev/null || true
  done
done
