"""Where a model served at c=8 loses against its in-process ceiling, from the server's own statistics: which batch
sizes formed, how long the server's session.run of 8 rows took against the same run in process, the share of the
point the session was busy (served rows / rows the session could have run in that time), and the refill time the
scheduler measured (a batch's end to as many rows queued again). Models with no config.yaml.

    bash benchmarks/run.sh c8_gaps.py [--model resnet50|resnet50_int8] [--protocols v2-grpc,v2-binary,tf-grpc]
                                      [--rounds 2] [--seconds 10]

A protocol ending in -shm (v2-grpc-shm, v2-binary-shm) sends the tensors through system shared memory
(perf_analyzer --shared-memory system) instead of in the messages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from load import WORK, Settings, ceiling, closed_loop, model_files, repository, start_server, version_stats
from ortserve.bench.server import RunningServer


def _batches(server: RunningServer, model: str) -> dict[int, tuple[int, int]]:
    """(count, session.run ns) by batch size, so far."""
    return {entry["batch_size"]: (entry["compute_infer"]["count"], entry["compute_infer"]["ns"])
            for entry in version_stats(server, model)["batch_stats"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="")
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "resnet50_int8"])
    parser.add_argument("--protocols", default="v2-grpc,v2-binary,tf-grpc")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    settings = Settings(args.perf_analyzer, args.cuda_lib, Path("/bin/true"), args.seconds, 0, 0)
    files = model_files()
    path = files[args.model]
    repo = repository("c8-gaps", {args.model: (path, None)})
    with start_server(repo, WORK / "c8-gaps.log") as server:
        for round_index in range(args.rounds):
            for protocol in args.protocols.split(","):
                before_ceiling = ceiling(path, [8], 3).rows_per_s
                before = _batches(server, args.model)
                result = closed_loop(settings, server, args.model, protocol, 8, args.seconds)
                after = _batches(server, args.model)
                bracket = (before_ceiling + ceiling(path, [8], 3).rows_per_s) / 2
                ran = {size: (count - before.get(size, (0, 0))[0], ns - before.get(size, (0, 0))[1])
                       for size, (count, ns) in after.items()}
                ran = {size: value for size, value in ran.items() if value[0]}
                rows = sum(size * count for size, (count, _) in ran.items())
                busy_rows_per_s = rows / (sum(ns for _, ns in ran.values()) / 1e9)
                count8, ns8 = ran.get(8, (0, 0))
                refill = version_stats(server, args.model)["ortserve"]["scheduler"]["refill_us"]
                print(f"round {round_index} {protocol}: {result.requests_per_s:.2f}/s, ceiling {bracket:.2f}, "
                      f"ratio {result.requests_per_s / bracket:.3f}; batches "
                      f"{ {size: count for size, (count, _) in sorted(ran.items())} }; run of 8 "
                      f"{ns8 / max(count8, 1) / 1e6:.1f} ms (in process {8000 / bracket:.1f}); session busy "
                      f"{result.requests_per_s / busy_rows_per_s:.3f} of the point; refill {refill / 1e3:.1f} ms",
                      flush=True)


if __name__ == "__main__":
    main()
