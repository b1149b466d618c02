#!/usr/bin/env bash
# Which event loop keeps the tail of 256 connections short, and with which client: a bare protocol
# (benchmarks/loop_fairness.py, 40 us a request, no uvicorn, no ortserve) on uvloop and on asyncio, and on uvloop
# accepting every waiting connection itself, against wrk with one thread and with two, three rounds in turn.
# Each server prints over how long its connections were made. Needs wrk.
#   bash benchmarks/loop_fairness.sh
set -eu
cd "$(dirname "$0")/.."
for round in 1 2 3; do
  for variant in "uvloop loop" "asyncio loop" "uvloop all-waiting"; do
    set -- $variant
    for threads in 1 2; do
      .venv/bin/python benchmarks/loop_fairness.py --loop "$1" --accept "$2" --port 18601 > /tmp/loop_fairness.out 2>&1 &
      server=$!
      sleep 1.5
      result=$(wrk -t$threads -c256 -d5s --latency http://127.0.0.1:18601/ \
        | awk '/ 99%/{p=$2} /Requests\/sec/{r=$2} /timeout/{t=$NF} END{print r " req/s, p99 " p ", timeouts " (t ? t : 0)}')
      kill -TERM $server
      wait $server 2>/dev/null || true
      echo "round $round, $1 (accept: $2), wrk -t$threads -c256: $result; $(cat /tmp/loop_fairness.out)"
    done
  done
done
