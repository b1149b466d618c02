"""Behaviour under load, with models that have no config.yaml first (defaults are the product):

- floors: MLP and ResNet50 with default config next to the hand-tuned configs of benchmarks/serving.py, and a
  static-INT8 ResNet50 with default config, against their in-process ceilings (perf_analyzer, closed loop);
- overload: ResNet50 and the MLP at 3x their closed-loop capacity (measured in the same run), open loop with 2 s
  deadlines for 20 s: goodput, calls ended past their deadline, refusal latency, server memory; ResNet50 with
  `latency_slo_ms: 500` the same;
- sweep: ResNet50 from 0.5x to 4x capacity with and without admission control, plotted;
- instances: the MLP on one and two instances, and on the range {min: 1, max: 2} under c=1 and c=32.

The open-loop generator is benchmarks/openloop/openloop.cc (C++, grpc++), built here with g++; it reports its
own CPU time and how far it fell behind its schedule. Run with `bash benchmarks/run.sh load.py` (it installs
perf_analyzer, wrk and the compiler), or directly:
    python benchmarks/load.py --perf-analyzer PATH --cuda-lib DIR [--only floors overload sweep instances] [--quick]
        [--pin]  (overload: the server on one core, the generators on the others)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import yaml
from tritonclient.grpc import service_pb2

from ortserve.bench.ceiling import Ceiling, measure_ceiling
from ortserve.bench.loadgen import LoadResult, perf_analyzer
from ortserve.bench.machine import load_average, machine, rss_bytes
from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import mlp, resnet50, save
from ortserve.optimize.commands import Judging, QuantizeRequest, quantize_model
from ortserve.optimize.source import resolve

HERE = Path(__file__).parent
WORK = HERE / "work" / "load"
RESULTS = HERE / "results"
PLOT = HERE.parent / "docs" / "images" / "overload-resnet50.png"
OPENLOOP_SOURCE = HERE / "openloop" / "openloop.cc"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SHAPES = {"mlp": [1, 784], "resnet50": [1, 3, 224, 224]}
TUNED = {"mlp": {"max_batch_size": 64, "max_queue_delay_us": 0},
         "resnet50": {"max_batch_size": 16, "max_queue_delay_us": 10000}}
DEADLINE_S = 2.0
SWEEP = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]


@dataclass(frozen=True)
class Settings:
    perf_analyzer: Path
    cuda_lib: str
    openloop: Path
    seconds: int  # per closed-loop point
    overload_s: int
    sweep_s: int
    pin: bool = False  # overload: the server on the first core, the load generators on the others


# -- models and repositories --

def model_files() -> dict[str, Path]:
    """model.onnx of the MLP, ResNet50 and ResNet50 static INT8 (quantized once, with random calibration data)."""
    source = WORK / "models"
    for name, builder in (("mlp", mlp), ("resnet50", resnet50)):
        if not (source / name / "1" / "model.onnx").exists():
            save(builder(), source, name)
    int8 = source / "resnet50" / "2" / "model.onnx"
    if not int8.exists():
        calibration = WORK / "resnet50-calibration.npz"
        rng = np.random.default_rng(0)
        np.savez(calibration, input=rng.standard_normal((32, 3, 224, 224)).astype(np.float32))
        outcome, _ = quantize_model(resolve("resnet50", source, 1), QuantizeRequest("static", str(calibration), 32),
                                    None, Judging(str(calibration), 32, task="classification"), progress=print)
        assert outcome.path == int8, outcome.path
    return {"mlp": source / "mlp" / "1" / "model.onnx", "resnet50": source / "resnet50" / "1" / "model.onnx",
            "resnet50_int8": int8}


def repository(name: str, entries: dict[str, tuple[Path, dict | None]]) -> Path:
    """A repository of `entries`: served name -> (model file, config.yaml or None for no file)."""
    repo = WORK / name
    shutil.rmtree(repo, ignore_errors=True)
    for served, (path, config) in entries.items():
        (repo / served / "1").mkdir(parents=True)
        (repo / served / "1" / "model.onnx").hardlink_to(path)
        if config is not None:
            (repo / served / "config.yaml").write_text(yaml.safe_dump(config))
    return repo


# -- measuring --

def ceiling(path: Path, batch_sizes: list[int], seconds: float) -> Ceiling:
    """The best in-process rows per second: ONNX Runtime's default threads and one thread, every batch size."""
    best: Ceiling | None = None
    for threads in (0, 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        found = measure_ceiling(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                                batch_sizes, seconds)
        if best is None or found.rows_per_s > best.rows_per_s:
            best = found
    assert best is not None
    return best


def closed_loop(settings: Settings, server: RunningServer, model: str, protocol: str, concurrency: int,
                seconds: int | None = None) -> LoadResult:
    shape = SHAPES["mlp" if model.startswith("mlp") else "resnet50"]
    common: dict = {"measurement_ms": (seconds or settings.seconds) * 1000, "library_path": settings.cuda_lib}
    if protocol.endswith("-shm"):  # tensors in system shared memory (Triton's extension), not in the message
        protocol, common["extra"] = protocol.removesuffix("-shm"), ("--shared-memory", "system")
    grpc_url = f"127.0.0.1:{server.grpc_port}"
    if protocol == "v2-grpc":
        return perf_analyzer(settings.perf_analyzer, model, grpc_url, concurrency, protocol="grpc", **common)
    if protocol == "tf-grpc":
        return perf_analyzer(settings.perf_analyzer, model, grpc_url, concurrency, protocol="grpc",
                             service_kind="tfserving", extra=("--shape", f"input:{','.join(map(str, shape))}"),
                             **common)
    return perf_analyzer(settings.perf_analyzer, model, server.host_port, concurrency, **common)


def build_openloop() -> Path:
    binary = WORK / "openloop"
    if not binary.exists() or binary.stat().st_mtime < OPENLOOP_SOURCE.stat().st_mtime:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True, text=True,
                               check=True).stdout.split()
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["g++", "-O2", "-std=c++17", str(OPENLOOP_SOURCE), *flags, "-o", str(binary)], check=True)
    return binary


def infer_request(model: str) -> Path:
    shape = SHAPES["mlp" if model.startswith("mlp") else "resnet50"]
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=shape)
    request.raw_input_contents.append(np.random.default_rng(0).standard_normal(shape).astype(np.float32).tobytes())
    path = WORK / f"{model}-request.bin"
    path.write_bytes(request.SerializeToString())
    return path


class RssWatch:
    """Samples the server's resident memory while a load runs."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.before = rss_bytes(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_bytes(self._pid))

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def open_loop(settings: Settings, server: RunningServer, model: str, rate: float, seconds: int,
              connections: int = 4) -> dict:
    """Open loop at `rate` with DEADLINE_S deadlines; outcomes, goodput, refusal latency and server memory."""
    with RssWatch(server.process.pid) as memory:
        completed = subprocess.run(
            [str(settings.openloop), f"127.0.0.1:{server.grpc_port}", MODEL_INFER, str(infer_request(model)),
             f"{rate:.3f}", str(seconds), str(DEADLINE_S), str(connections)],
            capture_output=True, text=True, timeout=seconds + DEADLINE_S + 60)
    if completed.returncode != 0:
        raise RuntimeError(f"openloop failed ({completed.returncode}): {completed.stderr}")
    report = json.loads(completed.stdout)
    codes = report["codes"]
    count = {code: entry["count"] for code, entry in codes.items()}
    ok = codes.get("OK", {"count": 0, "p50_ms": -1, "p99_ms": -1})
    refused = {code: entry for code, entry in codes.items() if code in ("UNAVAILABLE", "CANCELLED")}
    sent, wall = report["sent"], report["wall_s"]
    return {
        "model": model, "offered_per_s": sent / wall, "sent": sent, "codes": count,
        "goodput_per_s": ok["count"] / wall, "ok_p50_ms": ok["p50_ms"], "ok_p99_ms": ok["p99_ms"],
        "past_deadline_share": count.get("DEADLINE_EXCEEDED", 0) / sent,
        "refused_p99_ms": max((entry["p99_ms"] for entry in refused.values()), default=None),
        "rss_growth_mb": (memory.peak - memory.before) / 2**20, "rss_before_mb": memory.before / 2**20,
        "generator_cpu_share": report["cpu_s"] / wall, "generator_late_ms": report["late_sends_ms"],
        "load_average": load_average(),
    }


def version_stats(server: RunningServer, model: str) -> dict:
    return httpx.get(f"{server.url}/v2/models/{model}/stats", timeout=30).json()["model_stats"][0]


def show(label: str, result: LoadResult, ceiling_rows: float | None = None) -> dict:
    ratio = result.requests_per_s / ceiling_rows if ceiling_rows else None
    print(f"  {label:42s} {result.requests_per_s:9.1f}/s  p50 {result.p50_ms:8.2f}  p99 {result.p99_ms:8.2f}"
          + (f"  {ratio:5.3f} of ceiling ({ceiling_rows:.1f})" if ratio else ""), flush=True)
    return {**asdict(result), "ceiling_rows_per_s": ceiling_rows, "ratio_to_ceiling": ratio,
            "load_average": load_average()}


def show_open(label: str, point: dict) -> None:
    refused = point["refused_p99_ms"]
    print(f"  {label:30s} offered {point['offered_per_s']:8.1f}/s  goodput {point['goodput_per_s']:8.1f}/s  "
          f"past deadline {point['past_deadline_share']:6.2%}  ok p99 {point['ok_p99_ms']:8.1f} ms  "
          f"refusal p99 {'-' if refused is None else f'{refused:.1f}'} ms  RSS +{point['rss_growth_mb']:.0f} MB  "
          f"generator {point['generator_cpu_share']:.0%} CPU, late {point['generator_late_ms']:.0f} ms  "
          f"{point['codes']}", flush=True)


# -- parts --

def floors(settings: Settings, files: dict[str, Path]) -> dict:
    print("floors: default config next to hand-tuned (closed loop, perf_analyzer)", flush=True)
    results: dict = {}
    ceilings = {"mlp": [1, 8, 32, 64], "resnet50": [1, 4, 8, 16], "resnet50_int8": [1, 4, 8, 16]}
    for label, configs in (("default", {"mlp": None, "resnet50": None, "resnet50_int8": None}),
                           ("tuned", TUNED)):
        repo = repository(f"floors-{label}", {name: (files[name], config) for name, config in configs.items()})
        with start_server(repo, WORK / f"floors-{label}.log") as server:
            for model in configs:
                points = results.setdefault(label, {}).setdefault(model, [])
                path = files[model]
                if model == "mlp":
                    best = ceiling(path, ceilings[model], 3).rows_per_s
                    for protocol, concurrency in (("v2-grpc", 1), ("v2-grpc", 8), ("v2-binary", 8)):
                        result = closed_loop(settings, server, model, protocol, concurrency)
                        points.append({"protocol": protocol, "concurrency": concurrency,
                                       **show(f"{label} {model} {protocol} c={concurrency}", result, best)})
                    continue
                protocols = ("v2-binary", "v2-grpc", "tf-grpc") if model == "resnet50" else ("v2-binary", "v2-grpc")
                for protocol in protocols:
                    # the machine is shared: the ceiling is taken right before and after each point
                    before = ceiling(path, ceilings[model], 3).rows_per_s
                    result = closed_loop(settings, server, model, protocol, 8, max(settings.seconds, 8))
                    bracket = (before + ceiling(path, ceilings[model], 3).rows_per_s) / 2
                    points.append({"protocol": protocol, "concurrency": 8,
                                   **show(f"{label} {model} {protocol} c=8", result, bracket)})
                points.append({"scheduler": version_stats(server, model)["ortserve"]})
    return results


@contextlib.contextmanager
def _on_cpus(cpus: list[int]) -> Iterator[None]:
    """This process (and what it starts meanwhile, which inherits the affinity) runs on `cpus`."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def overload(settings: Settings, files: dict[str, Path]) -> dict:
    print(f"overload: open loop at 3x closed-loop capacity, {DEADLINE_S:.0f} s deadlines", flush=True)
    repo = repository("overload", {"resnet50": (files["resnet50"], None),
                                   "resnet50_slo": (files["resnet50"], {"latency_slo_ms": 500}),
                                   "mlp": (files["mlp"], None)})
    results: dict = {"pinned": settings.pin}
    cores = sorted(os.sched_getaffinity(0))
    server_cores, generator_cores = (cores[:1], cores[1:]) if settings.pin else (cores, cores)
    with _on_cpus(server_cores):
        server_context = start_server(repo, WORK / "overload.log")
    with server_context as server, _on_cpus(generator_cores):
        capacities: dict[str, LoadResult] = {}
        for model in ("resnet50", "resnet50_slo", "mlp"):
            # closed-loop callers would be refused over the objective: the same model's capacity stands for it
            measured = model.removesuffix("_slo")
            if measured not in capacities:
                capacities[measured] = closed_loop(settings, server, measured, "v2-grpc", 8)
                show(f"{measured} capacity (V2 gRPC c=8)", capacities[measured])
            capacity = capacities[measured]
            point = open_loop(settings, server, model, 3 * capacity.requests_per_s, settings.overload_s)
            point["capacity_per_s"] = capacity.requests_per_s
            point["goodput_to_capacity"] = point["goodput_per_s"] / capacity.requests_per_s
            show_open(f"{model} at 3x", point)
            print(f"    goodput {point['goodput_to_capacity']:.3f} of capacity", flush=True)
            point["server"] = version_stats(server, model)["ortserve"]
            results[model] = point
            time.sleep(DEADLINE_S + 1)
    return results


def sweep(settings: Settings, files: dict[str, Path]) -> dict:
    print("sweep: ResNet50 from 0.5x to 4x capacity, with and without admission control", flush=True)
    repo = repository("sweep", {"resnet50": (files["resnet50"], None),
                                "resnet50_no_admission": (files["resnet50"], {"queue": {"admission": False}})})
    results: dict = {"multiples": SWEEP}
    with start_server(repo, WORK / "sweep.log") as server:
        capacity = closed_loop(settings, server, "resnet50", "v2-grpc", 8).requests_per_s
        results["capacity_per_s"] = capacity
        print(f"  capacity {capacity:.1f}/s", flush=True)
        for model in ("resnet50", "resnet50_no_admission"):
            for multiple in SWEEP:
                point = open_loop(settings, server, model, multiple * capacity, settings.sweep_s)
                show_open(f"{model} {multiple}x", point)
                results.setdefault(model, []).append(point)
                time.sleep(DEADLINE_S + 1)
    plot(results)
    return results


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    capacity = results["capacity_per_s"]
    figure, (goodput, latency, late) = plt.subplots(1, 3, figsize=(14, 4))
    for model, label in (("resnet50", "admission control (default)"),
                         ("resnet50_no_admission", "no admission control")):
        offered = [point["offered_per_s"] / capacity for point in results[model]]
        goodput.plot(offered, [point["goodput_per_s"] / capacity for point in results[model]], "o-", label=label)
        latency.plot(offered, [point["ok_p99_ms"] for point in results[model]], "o-", label=label)
        late.plot(offered, [100 * point["past_deadline_share"] for point in results[model]], "o-", label=label)
    goodput.set(xlabel="offered load (x closed-loop capacity)", ylabel="goodput (x capacity)",
                title="answered within the deadline")
    latency.set(xlabel="offered load (x capacity)", ylabel="p99 of answered calls (ms)", title="latency")
    late.set(xlabel="offered load (x capacity)", ylabel="% of calls", title="ended past their 2 s deadline")
    for axes in (goodput, latency, late):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(f"ResNet50 on 2 CPU cores, open loop with 2 s deadlines (capacity {capacity:.1f} img/s)")
    figure.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT, dpi=110)
    print(f"  plot: {PLOT}", flush=True)


def instances(settings: Settings, files: dict[str, Path]) -> dict:
    print("instances: the MLP on one, two, and a range of instances", flush=True)
    repo = repository("instances", {"mlp_1": (files["mlp"], {"instances": 1}),
                                    "mlp_2": (files["mlp"], {"instances": 2}),
                                    "mlp_range": (files["mlp"], {"instances": {"min": 1, "max": 2}})})
    results: dict = {}
    with start_server(repo, WORK / "instances.log") as server:
        for model in ("mlp_1", "mlp_2"):
            for protocol in ("v2-grpc", "v2-binary"):
                for concurrency in (1, 8, 32):
                    result = closed_loop(settings, server, model, protocol, concurrency)
                    results.setdefault(model, []).append({"protocol": protocol, "concurrency": concurrency,
                                                          **show(f"{model} {protocol} c={concurrency}", result)})
        for concurrency in (1, 32):
            for protocol in ("v2-grpc", "v2-binary"):
                result = closed_loop(settings, server, "mlp_range", protocol, concurrency,
                                     max(settings.seconds, 10))
                stats = version_stats(server, "mlp_range")["ortserve"]
                show(f"mlp_range {protocol} c={concurrency} -> {stats['instances']['count']} instances", result)
                results.setdefault("mlp_range", []).append(
                    {"protocol": protocol, "concurrency": concurrency, **asdict(result),
                     "instances": stats["instances"]["count"], "changes": stats["instance_changes"]})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", default="", help="directory holding libcudart.so.12 for perf_analyzer")
    parser.add_argument("--quick", action="store_true", help="short points, for a smoke run")
    parser.add_argument("--only", nargs="+", choices=["floors", "overload", "sweep", "instances"],
                        default=["floors", "overload", "sweep", "instances"])
    parser.add_argument("--pin", action="store_true",
                        help="overload: the server on the first core, the load generators on the others (so that a "
                             "fast model's 3x can be generated without taking the server's cores)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{time.strftime('%Y-%m-%d')}-load.json")
    args = parser.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs two cores: one for the server, one for the load generators")
    settings = Settings(args.perf_analyzer, args.cuda_lib, build_openloop(), 2 if args.quick else 5,
                        4 if args.quick else 20, 3 if args.quick else 10, args.pin)
    files = model_files()
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "load_average": load_average()}
    parts = {"floors": floors, "overload": overload, "sweep": sweep, "instances": instances}
    for name in args.only:
        results[name] = parts[name](settings, files)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}; load average {statistics.fmean(load_average()):.2f}")


if __name__ == "__main__":
    main()
