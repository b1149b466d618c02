"""Served throughput and latency against the in-process ceiling, over REST (V2 binary, V2 JSON, TF Serving
JSON) and gRPC (V2, TF Serving).

Run with `make bench` (it installs perf_analyzer and wrk first), or directly:
    python benchmarks/serving.py --perf-analyzer PATH --cuda-lib DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import orjson
import yaml
from PIL import Image
from skimage import data

from ortserve.bench.ceiling import measure_ceiling
from ortserve.bench.loadgen import LoadResult, perf_analyzer, wrk
from ortserve.bench.machine import load_average, machine
from ortserve.bench.server import start_server
from ortserve.examples import demo
from ortserve.examples.models import mlp, resnet50, save
from ortserve.repository.config import load_config
from ortserve.runtime.image import bind_image_classifier
from ortserve.runtime.session import create_session
from ortserve.runtime.signature import read_signature

WORK = Path(__file__).parent / "work"
MODELS = {
    # name: (builder, config.yaml, ceiling batch sizes, seconds per load point)
    "mlp": (mlp, {"max_batch_size": 64, "max_queue_delay_us": 0}, [1, 8, 32, 64], 5),
    "resnet50": (resnet50, {"max_batch_size": 16, "max_queue_delay_us": 10000}, [1, 4, 8, 16], 12),
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


def _multipart(image: bytes, boundary: str = "ortservebenchmarkboundary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"cat.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _server_split(url: str, jpeg: bytes, concurrency: int, requests: int = 64) -> dict[str, float]:
    """Median preprocess and model (queue + compute) times the server reports, under `concurrency` clients."""
    def one(_: int) -> tuple[float, float]:
        answer = httpx.post(url, files={"image": ("cat.jpg", jpeg)}, timeout=60).json()
        return answer["preprocess_time_ms"], answer["inference_time_ms"]

    with ThreadPoolExecutor(concurrency) as pool:
        times = np.array(list(pool.map(one, range(requests))))
    preprocess, model = np.median(times, axis=0)
    return {"preprocess_ms": float(preprocess), "model_ms": float(model),
            "preprocess_share": float(preprocess / (preprocess + model))}


def image_benchmark(seconds: int) -> dict:
    """EfficientNet-Lite0 behind POST /predict with a real JPEG, against the in-process model ceiling."""
    repository = WORK / "demo-repository"
    demo.build(repository)
    model_dir = repository / demo.MODEL
    config = load_config(model_dir)
    session = create_session(demo.MODEL, model_dir / "1" / "model.onnx", config)
    ceiling = measure_ceiling(session, [1, 2, 4, 8], seconds=min(seconds, 4))
    assert config.image is not None
    classifier = bind_image_classifier(demo.MODEL, model_dir, config.image, read_signature(session))
    jpeg_path = WORK / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(jpeg_path, quality=95)
    jpeg = jpeg_path.read_bytes()
    start = time.perf_counter()
    for _ in range(50):
        classifier.preprocess(jpeg)
    preprocess_ms = (time.perf_counter() - start) / 50 * 1000
    print(f"{demo.MODEL}: in-process ceiling {ceiling.rows_per_s:.1f} img/s at batch {ceiling.batch_size}; "
          f"in-process preprocessing {preprocess_ms:.2f} ms per {Image.open(jpeg_path).size} JPEG", flush=True)
    body_path = WORK / "chelsea-multipart.bin"
    body, content_type = _multipart(jpeg)
    body_path.write_bytes(body)
    server = start_server(repository, WORK / "server.log")
    points = []
    try:
        for concurrency in (1, 8):
            local = measure_ceiling(session, [ceiling.batch_size], seconds=3).rows_per_s
            result = wrk(f"{server.url}/predict", body_path, concurrency, headers={"Content-Type": content_type},
                         duration_s=seconds)
            local = (local + measure_ceiling(session, [ceiling.batch_size], seconds=3).rows_per_s) / 2
            split = _server_split(f"{server.url}/predict", jpeg, concurrency)
            ratio = result.requests_per_s / local
            points.append({"protocol": "image-multipart", "concurrency": concurrency, **asdict(result),
                           "ceiling_rows_per_s": local, "ratio_to_ceiling": ratio, **split,
                           "load_average": load_average()})
            print(f"  image     c={concurrency:<3d} {result.requests_per_s:9.1f} req/s  p50 {result.p50_ms:8.2f} ms  "
                  f"p99 {result.p99_ms:8.2f} ms  {ratio:6.3f} of ceiling ({local:.1f})  server split: preprocess "
                  f"{split['preprocess_ms']:.2f} ms, model {split['model_ms']:.2f} ms "
                  f"({split['preprocess_share']:.0%} preprocessing)  errors {result.errors}", flush=True)
    finally:
        server.stop()
        del session
    return {"ceiling": asdict(ceiling), "in_process_preprocess_ms": preprocess_ms, "config": CONFIG_NOTE,
            "points": points}


CONFIG_NOTE = "the demo repository's config.yaml (src/ortserve/examples/demo.py)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="", help="directory holding libcudart.so.12 for perf_analyzer")
    parser.add_argument("--quick", action="store_true", help="shorter load points, for a smoke run")
    parser.add_argument("--out", type=Path, default=WORK / "serving.json")
    parser.add_argument("--only", nargs="+", choices=[*MODELS, "image"], default=[*MODELS, "image"],
                        help="run only these parts")
    args = parser.parse_args()

    repository = WORK / "repository"
    build_repository(repository)
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {}}
    for name, (_, _, batch_sizes, seconds) in MODELS.items():
        if name not in args.only:
            continue
        seconds = 2 if args.quick else seconds
        config = load_config(repository / name)
        session = create_session(name, repository / name / "1" / "model.onnx", config)
        ceiling = measure_ceiling(session, batch_sizes, seconds=min(seconds, 4))
        print(f"{name}: in-process ceiling {ceiling.rows_per_s:.1f} rows/s at batch {ceiling.batch_size} "
              f"({', '.join(f'b{b}: {r:.1f}' for b, r in ceiling.by_batch_size.items())})", flush=True)
        shape = [1, 784] if name == "mlp" else [1, 3, 224, 224]
        bodies = write_bodies(name, shape)
        server = start_server(repository, WORK / "server.log")
        points = []
        try:
            for concurrency in CONCURRENCY:
                # The machine is shared: measure the ceiling again next to each load point, so that a busy
                # neighbour weighs on both sides of the ratio alike.
                local = measure_ceiling(session, [ceiling.batch_size], seconds=min(seconds, 4)).rows_per_s
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
                local = (local + measure_ceiling(session, [ceiling.batch_size], seconds=min(seconds, 4)).rows_per_s) / 2
                for protocol, result in runs.items():
                    ratio = result.requests_per_s / local
                    points.append({"protocol": protocol, "concurrency": concurrency, **asdict(result),
                                   "ceiling_rows_per_s": local, "ratio_to_ceiling": ratio,
                                   "load_average": load_average()})
                    print(f"  {protocol:9s} c={concurrency:<3d} {result.requests_per_s:9.1f} req/s  "
                          f"p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  "
                          f"{ratio:6.3f} of ceiling ({local:.1f})  errors {result.errors}", flush=True)
        finally:
            server.stop()
            del session
        results["models"][name] = {"ceiling": asdict(ceiling), "config": MODELS[name][1], "points": points}
    if "image" in args.only:
        results["models"][demo.MODEL] = image_benchmark(2 if args.quick else 10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    subprocess.run(["uptime"], check=False)


if __name__ == "__main__":
    main()
