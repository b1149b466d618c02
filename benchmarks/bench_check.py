"""`ortserve bench` checked against perf_analyzer (C++; V2 gRPC and binary) and wrk (C; V2 JSON) on the same
server and points, alternating, medians of rounds: where they agree, the Python generator is not the limit; where
they differ, the table says by how much.

    bash benchmarks/run.sh bench_check.py [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load import RESULTS, model_files, repository
from ortserve.bench.loadgen import perf_analyzer, wrk
from ortserve.bench.machine import load_average, machine
from ortserve.bench.server import RunningServer, start_server
from ortserve.bench.targets import build, metadata, sample_inputs

POINTS = [("mlp", "v2-grpc", 1), ("mlp", "v2-grpc", 8), ("mlp", "v2-binary", 1), ("mlp", "v2-binary", 8),
          ("mlp", "v2-rest", 1), ("mlp", "v2-rest", 8), ("resnet50", "v2-grpc", 1), ("resnet50", "v2-grpc", 8)]


def ours(server: RunningServer, model: str, protocol: str, concurrency: int, seconds: int) -> dict:
    url = f"127.0.0.1:{server.grpc_port}" if protocol == "v2-grpc" else server.url
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "ortserve", "bench", url, "--model", model, "--protocol", protocol,
                        "--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", "2",
                        "--data", "zeros", "--out", out], check=True, capture_output=True, timeout=seconds * 4 + 120)
        (entry,) = json.loads((Path(out) / "report.json").read_text())["points"]
    return {"throughput_per_s": entry["throughput_per_s"], "p50_ms": entry["p50_ms"],
            "generator_cpu_cores": entry["generator_cpu_cores"], "saturated": entry["generator_saturated"]}


def theirs(args: argparse.Namespace, server: RunningServer, model: str, protocol: str, concurrency: int) -> dict:
    if protocol == "v2-rest":  # the same JSON body, from wrk
        request = build(server.url, "v2-rest", model, sample_inputs(metadata(server.url, "v2-rest", model), "zeros",
                                                                    1, {}))
        with tempfile.NamedTemporaryFile(suffix=".json") as body:
            body.write(request.body)
            body.flush()
            result = wrk(f"{server.url}/v2/models/{model}/infer", Path(body.name), concurrency,
                         headers=dict(request.headers), duration_s=args.seconds)
        return {"throughput_per_s": result.requests_per_s, "p50_ms": result.p50_ms}
    common = {"measurement_ms": args.seconds * 1000, "library_path": args.cuda_lib}
    if protocol == "v2-grpc":
        result = perf_analyzer(args.perf_analyzer, model, f"127.0.0.1:{server.grpc_port}", concurrency,
                               protocol="grpc", **common)
    else:
        result = perf_analyzer(args.perf_analyzer, model, server.host_port, concurrency, **common)
    return {"throughput_per_s": result.requests_per_s, "p50_ms": result.p50_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--protocols", nargs="+", default=["v2-grpc", "v2-binary", "v2-rest"])
    args = parser.parse_args()
    files = model_files()
    repo = repository("bench-check", {"mlp": (files["mlp"], None), "resnet50": (files["resnet50"], None)})
    rows = []
    with start_server(repo, repo.parent / "bench-check.log") as server:
        for model, protocol, concurrency in [point for point in POINTS if point[1] in args.protocols]:
            reference_tool = "wrk" if protocol == "v2-rest" else "perf_analyzer"
            runs: dict[str, list[dict]] = {"ortserve bench": [], reference_tool: []}
            for _ in range(args.rounds):
                runs["ortserve bench"].append(ours(server, model, protocol, concurrency, args.seconds))
                runs[reference_tool].append(theirs(args, server, model, protocol, concurrency))
            row = {"model": model, "protocol": protocol, "concurrency": concurrency, "runs": runs}
            for tool, measured in runs.items():
                row[tool] = {key: statistics.median(run[key] for run in measured)
                             for key in ("throughput_per_s", "p50_ms")}
            mine, reference = row["ortserve bench"], row[reference_tool]
            row["throughput_ratio"] = mine["throughput_per_s"] / reference["throughput_per_s"]
            row["p50_ratio"] = mine["p50_ms"] / reference["p50_ms"]
            rows.append(row)
            print(model, protocol, concurrency, {k: row[k] for k in ("ortserve bench", reference_tool,
                                                                     "throughput_ratio", "p50_ratio")}, flush=True)
    suffix = "" if set(args.protocols) == {"v2-grpc", "v2-binary", "v2-rest"} else "-" + "-".join(args.protocols)
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-bench-check{suffix}.json"
    out.write_text(json.dumps({"machine": machine(), "load_average": load_average(), "points": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
