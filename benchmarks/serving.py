"""Served throughput and latency against the in-process ceiling, over REST (V2 binary, V2 JSON, TF Serving
JSON) and gRPC (V2, TF Serving).

Run with `make bench` (it installs perf_analyzer and wrk first), or directly:
    python benchmarks/serving.py --perf-analyzer PATH --cuda-lib DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import orjson
import yaml

from ortserve.bench.ceiling import measure_ceiling
from ortserve.bench.loadgen import LoadResult, perf_analyzer, wrk
from ortserve.bench.server import start_server
from ortserve.examples.models import mlp, resnet50, save
from ortserve.repository.config import load_config
from ortserve.runtime.session import create_session

WORK = Path(__file__).parent / "work"
MODELS = {
    # name: (builder, config.yaml, ceiling batch sizes, seconds per load point)
    "mlp": (mlp, {"max_batch_size": 64, "max_queue_delay_us": 0}, [1, 8, 32, 64], 5),
    "resnet50": (resnet50, {"max_batch_size": 16, "max_queue_delay_us": 0}, [1, 4, 8, 16], 12),
}
CONCURRENCY = [1, 8, 32]


def build_repository(repository: Path) -> None:
    for name, (builder, config, _, _) in MODELS.items():
        if not (repository / name / "1" / "model.onnx").exists():
            save(builder(), repository, name)
        (repository / name / "config.yaml").write_text(yaml.safe_dump(config))


def write_bodies(name: str, shape: list[int]) -> dict[str, Path]:
    """One random row, as a V2 JSON body and a TF Serving row-format body."""
    row = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    bodies = {
        "v2-json": {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": row.reshape(-1)}]},
        "tf-json": {"instances": row},
    }
    paths = {}
    for protocol, body in bodies.items():
        paths[protocol] = WORK / f"{name}-{protocol}.json"
        paths[protocol].write_bytes(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    return paths


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="", help="directory holding libcudart.so.12 for perf_analyzer")
    parser.add_argument("--quick", action="store_true", help="shorter load points, for a smoke run")
    parser.add_argument("--out", type=Path, default=WORK / "serving.json")
    args = parser.parse_args()

    repository = WORK / "repository"
    build_repository(repository)
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {}}
    for name, (_, _, batch_sizes, seconds) in MODELS.items():
        seconds = 2 if args.quick else seconds
        config = load_config(repository / name)
        session = create_session(name, repository / name / "1" / "model.onnx", config)
        ceiling = measure_ceiling(session, batch_sizes, seconds=min(seconds, 4))
        del session
        print(f"{name}: in-process ceiling {ceiling.rows_per_s:.1f} rows/s at batch {ceiling.batch_size} "
              f"({', '.join(f'b{b}: {r:.1f}' for b, r in ceiling.by_batch_size.items())})", flush=True)
        shape = [1, 784] if name == "mlp" else [1, 3, 224, 224]
        bodies = write_bodies(name, shape)
        server = start_server(repository, WORK / "server.log")
        points = []
        try:
            for concurrency in CONCURRENCY:
                grpc_url = f"127.0.0.1:{server.grpc_port}"
                shape_flag = ("--shape", f"input:{','.join(map(str, shape))}")
                runs: dict[str, LoadResult] = {
                    "v2-binary": perf_analyzer(args.perf_analyzer, name, server.host_port, concurrency,
                                               measurement_ms=seconds * 1000, library_path=args.cuda_lib),
                    "v2-grpc": perf_analyzer(args.perf_analyzer, name, grpc_url, concurrency, protocol="grpc",
                                             measurement_ms=seconds * 1000, library_path=args.cuda_lib),
                    "tf-grpc": perf_analyzer(args.perf_analyzer, name, grpc_url, concurrency, protocol="grpc",
                                             service_kind="tfserving", measurement_ms=seconds * 1000,
                                             library_path=args.cuda_lib, extra=shape_flag),
                    "v2-json": wrk(f"{server.url}/v2/models/{name}/infer", bodies["v2-json"], concurrency,
                                   headers={"Content-Type": "application/json"}, duration_s=seconds),
                    "tf-json": wrk(f"{server.url}/v1/models/{name}:predict", bodies["tf-json"], concurrency,
                                   headers={"Content-Type": "application/json"}, duration_s=seconds),
                }
                for protocol, result in runs.items():
                    ratio = result.requests_per_s / ceiling.rows_per_s
                    points.append({"protocol": protocol, "concurrency": concurrency, **asdict(result),
                                   "ratio_to_ceiling": ratio, "load_average": load_average()})
                    print(f"  {protocol:9s} c={concurrency:<3d} {result.requests_per_s:9.1f} req/s  "
                          f"p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  "
                          f"{ratio:6.3f} of ceiling  errors {result.errors}", flush=True)
        finally:
            server.stop()
        results["models"][name] = {"ceiling": asdict(ceiling), "config": MODELS[name][1], "points": points}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    subprocess.run(["uptime"], check=False)


if __name__ == "__main__":
    main()
