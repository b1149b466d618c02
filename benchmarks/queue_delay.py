"""How `max_queue_delay_us` shapes batches: ResNet50 served by ortserve, driven by perf_analyzer at one
concurrency, once per delay and round (alternating, so a busy neighbour hits every delay alike). Prints requests/s,
latency and the server's own batch-size statistics (`/v2/models/resnet50/stats`) for the measured interval.

Usage: python benchmarks/queue_delay.py --perf-analyzer PATH --cuda-lib DIR [--delays 0 10000] [--rounds 2]
                                        [--concurrency 8] [--protocol grpc|http]
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

import yaml

from ortserve.bench.loadgen import perf_analyzer
from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import resnet50, save

WORK = Path(__file__).parent / "work" / "queue-delay"
MODEL = "resnet50"


def batch_counts(server: RunningServer) -> dict[int, tuple[int, int]]:
    """Per batch size: how many batches ran, and their total compute time in ns."""
    with urllib.request.urlopen(f"{server.url}/v2/models/{MODEL}/stats") as response:
        (stats,) = json.load(response)["model_stats"]
    return {entry["batch_size"]: (entry["compute_infer"]["count"], entry["compute_infer"]["ns"])
            for entry in stats["batch_stats"]}


def measure(args: argparse.Namespace, delay_us: int) -> None:
    (WORK / MODEL / "config.yaml").write_text(yaml.safe_dump({"max_batch_size": 16, "max_queue_delay_us": delay_us}))
    with start_server(WORK, WORK.parent / "queue-delay-server.log") as server:
        url = f"127.0.0.1:{server.grpc_port}" if args.protocol == "grpc" else server.host_port

        def load(milliseconds: int) -> str:
            result = perf_analyzer(args.perf_analyzer, MODEL, url, args.concurrency, protocol=args.protocol,
                                   measurement_ms=milliseconds, library_path=args.cuda_lib)
            return f"{result.requests_per_s:.1f} req/s (p50 {result.p50_ms:.1f}, p99 {result.p99_ms:.1f} ms)"

        load(3000)  # warm up, and let the batch sizes settle
        before = batch_counts(server)
        figures = load(8000)
        after = batch_counts(server)
    print(f"delay {delay_us:>6} us: {figures}", flush=True)
    for size, (count, ns) in sorted(after.items()):
        ran = count - before.get(size, (0, 0))[0]
        if ran:
            spent = ns - before.get(size, (0, 0))[1]
            print(f"    batches of {size:>2}: {ran:>4}, {spent / ran / size / 1e6:.1f} ms per row", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="", help="directory holding libcudart.so.12 for perf_analyzer")
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 10000], help="max_queue_delay_us values")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    args = parser.parse_args()
    if not (WORK / MODEL / "1" / "model.onnx").exists():
        save(resnet50(), WORK, MODEL)
    for _ in range(args.rounds):
        for delay_us in args.delays:
            measure(args, delay_us)


if __name__ == "__main__":
    main()
