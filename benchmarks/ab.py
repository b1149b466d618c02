"""A/B of two source trees of ortserve on the same model, alternating rounds (the machine is shared), with
perf_analyzer; prints each point and the medians. The model has no config.yaml unless --config gives one.

    git worktree add /tmp/before 280fe36
    python benchmarks/ab.py --perf-analyzer PA --cuda-lib DIR --tree before=/tmp/before/src --tree now=src \\
        --model mlp --concurrency 1 8 --protocols v2-grpc v2-binary --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import yaml

from ortserve.bench.loadgen import LoadResult, perf_analyzer
from ortserve.bench.server import start_server
from ortserve.examples.models import dense_stack, mlp, resnet50, save

WORK = Path(__file__).parent / "work" / "ab"
BUILDERS = {"mlp": (mlp, [1, 784]), "resnet50": (resnet50, [1, 3, 224, 224]),
            # 24 layers of 1024 x 1024, 96 MB of weights read once a batch: a batch of 8 costs 1.8x one row
            "memory_bound": (lambda: dense_stack(layers=24, width=1024, distinct_weights=True), [1, 1024])}


def point(args: argparse.Namespace, grpc_url: str, rest_url: str, protocol: str, concurrency: int) -> LoadResult:
    common = {"measurement_ms": args.seconds * 1000, "library_path": args.cuda_lib}
    if protocol == "v2-grpc":
        return perf_analyzer(args.perf_analyzer, args.model, grpc_url, concurrency, protocol="grpc", **common)
    if protocol == "tf-grpc":
        shape = ",".join(map(str, BUILDERS[args.model][1]))
        return perf_analyzer(args.perf_analyzer, args.model, grpc_url, concurrency, protocol="grpc",
                             service_kind="tfserving", extra=("--shape", f"input:{shape}"), **common)
    return perf_analyzer(args.perf_analyzer, args.model, rest_url, concurrency, **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="")
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR, the tree's src directory")
    parser.add_argument("--model", choices=sorted(BUILDERS), default="mlp")
    parser.add_argument("--config", help="config.yaml for the model, as YAML text (default: none)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--protocols", nargs="+", choices=["v2-grpc", "v2-binary", "tf-grpc"], default=["v2-grpc"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    trees = dict(entry.split("=", 1) for entry in args.tree)
    repository = WORK / args.model
    if not (repository / args.model / "1" / "model.onnx").exists():
        save(BUILDERS[args.model][0](), repository, args.model)
    config_path = repository / args.model / "config.yaml"
    config_path.unlink(missing_ok=True)
    if args.config:
        config_path.write_text(yaml.safe_dump(yaml.safe_load(args.config)))
    results: dict[tuple[str, str, int], list[LoadResult]] = {}
    for round_index in range(args.rounds):
        for name, source in trees.items():
            os.environ["PYTHONPATH"] = str(Path(source).resolve())  # the server subprocess imports this tree
            with start_server(repository, WORK / f"{name}.log") as server:
                for concurrency in args.concurrency:
                    for protocol in args.protocols:
                        result = point(args, f"127.0.0.1:{server.grpc_port}", server.host_port, protocol,
                                       concurrency)
                        results.setdefault((name, protocol, concurrency), []).append(result)
                        print(f"round {round_index} {name:8s} {protocol:9s} c={concurrency:<3d} "
                              f"{result.requests_per_s:9.1f}/s  p50 {result.p50_ms:7.3f} ms", flush=True)
    print("medians:")
    for (name, protocol, concurrency), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        print(f"  {protocol:9s} c={concurrency:<3d} {name:8s} "
              f"{statistics.median(r.requests_per_s for r in runs):9.1f}/s  "
              f"p50 {statistics.median(r.p50_ms for r in runs):7.3f} ms")


if __name__ == "__main__":
    main()
