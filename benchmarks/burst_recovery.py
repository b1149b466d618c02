"""After a burst: does a server with no config.yaml go back to its calm figures? The MLP is served with defaults
and driven open loop over V2 gRPC by `ortserve bench` at a steady rate (calm); then wrk sends a burst from 1,000
keep-alive connections of V2 JSON for a few seconds; then the calm rate again, right after the burst and once
more after FORGET_AFTER_NS of it. Prints open-loop p50/p99 and the batch cost line the scheduler fitted
(`ortserve_batch_fixed_cost_seconds`, `..._row_cost_seconds`, `ortserve_batch_max_wait_seconds`) at each phase.
Trees alternate round by round (`--tree NAME=SRC`, as benchmarks/ab.py) so a busy neighbour hits both alike.

Usage: bash benchmarks/run.sh burst_recovery.py [--tree before=/tmp/before/src --tree now=src] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ortserve.bench.loadgen import wrk
from ortserve.bench.server import RunningServer, metric_samples, start_server
from ortserve.examples.models import mlp, save
from ortserve.runtime.costs import FORGET_AFTER_NS

WORK = Path(__file__).parent / "work" / "burst"
MODEL = "mlp"
GAUGES = {"fixed_us": "ortserve_batch_fixed_cost_seconds", "row_us": "ortserve_batch_row_cost_seconds",
          "wait_us": "ortserve_batch_max_wait_seconds"}


def gauges(server: RunningServer) -> dict[str, float]:
    samples = {name: value for (name, _), value in metric_samples(server).items()}
    return {key: round(samples[name] * 1e6, 1) for key, name in GAUGES.items()}


def calm(server: RunningServer, rate: int, seconds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "ortserve", "bench", f"127.0.0.1:{server.grpc_port}", "--model", MODEL,
                        "--protocol", "v2-grpc", "--rate", str(rate), "--duration", str(seconds), "--warmup", "1",
                        "--out", out], check=True, capture_output=True)
        (point,) = json.loads((Path(out) / "report.json").read_text())["points"]
    return {"p50_ms": point["p50_ms"], "p99_ms": point["p99_ms"], "errors": point["errors"]}


def one_round(tree: str, args: argparse.Namespace, body: Path) -> dict[str, dict[str, float]]:
    phases: dict[str, dict[str, float]] = {}
    with start_server(WORK / "repository", WORK / "server.log", env={"PYTHONPATH": tree}) as server:
        phases["calm"] = calm(server, args.rate, args.seconds) | gauges(server)
        burst = wrk(f"{server.url}/v2/models/{MODEL}/infer", body, args.burst_connections,
                    headers={"Content-Type": "application/json"}, duration_s=args.seconds)
        phases["burst"] = {"req_per_s": burst.requests_per_s, "errors": burst.errors} | gauges(server)
        phases["right after"] = calm(server, args.rate, args.seconds) | gauges(server)
        calm(server, args.rate, FORGET_AFTER_NS // 1_000_000_000)
        phases["30 s later"] = calm(server, args.rate, args.seconds) | gauges(server)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", help="unused (benchmarks/run.sh passes it)")
    parser.add_argument("--cuda-lib", help="unused (benchmarks/run.sh passes it)")
    parser.add_argument("--tree", action="append", default=[], help="NAME=SRC: a source tree to serve from")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=1000, help="the calm open-loop rate, requests/s")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--burst-connections", type=int, default=1000)
    args = parser.parse_args()
    trees = dict(tree.split("=", 1) for tree in args.tree) or {"now": str(Path(__file__).parent.parent / "src")}
    save(mlp(), WORK / "repository", MODEL)
    body = WORK / "body.json"
    row = np.random.default_rng(0).random(784, dtype=np.float32).tolist()
    body.write_text(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": row}]}))
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
    for round_index in range(args.rounds):
        for name, tree in trees.items():
            phases = one_round(tree, args, body)
            results[name].append(phases)
            for phase, figures in phases.items():
                print(f"round {round_index} {name:8} {phase:12} {figures}", flush=True)
    print("medians:")
    for name, rounds in results.items():
        for phase in rounds[0]:
            medians = {key: statistics.median(r[phase][key] for r in rounds) for key in rounds[0][phase]}
            print(f"  {name:8} {phase:12} {medians}")


if __name__ == "__main__":
    main()
