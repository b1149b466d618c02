"""What the traffic features cost and give, with default configs otherwise:

- shadow: the served model's throughput (MLP, c=8) and p50 (ResNet50, c=1) with no shadow, with every request
  copied (fraction 1.0) to a cheap shadow and to an expensive one; the shadow's own counts (compared, dropped).
  MLP: served 784-256-10, cheap shadow the same model, expensive one 784-8192-10. ResNet50: served FP32, cheap
  shadow its static INT8, expensive one FP32 again. One server per model; the arms switch by rewriting
  config.yaml and calling the load API (a routing-only change: the versions stay loaded), rounds interleaved.
- group: a ResNet50 FP32 and its static INT8 as one least_latency group, at c=1 and c=8, against each member
  alone: throughput, p50, and where the group's requests went.

Run with `bash benchmarks/run.sh traffic.py [--only shadow group] [--seconds 8] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import httpx
import yaml

from load import RESULTS, WORK, closed_loop, model_files
from ortserve.bench.loadgen import LoadResult
from ortserve.bench.machine import load_average, machine
from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import mlp, save

TRAFFIC = WORK.parent / "traffic"


class Settings(argparse.Namespace):
    perf_analyzer: Path
    cuda_lib: str
    seconds: int
    rounds: int
    only: list[str]
    shadow_models: list[str]


def _repository(name: str, models: dict[str, dict[int, Path]], configs: dict[str, dict]) -> Path:
    repo = TRAFFIC / name
    shutil.rmtree(repo, ignore_errors=True)
    for model, versions in models.items():
        for version, path in versions.items():
            (repo / model / str(version)).mkdir(parents=True)
            (repo / model / str(version) / "model.onnx").hardlink_to(path)
    for model, config in configs.items():
        (repo / model).mkdir(parents=True, exist_ok=True)
        (repo / model / "config.yaml").write_text(yaml.safe_dump(config))
    return repo


def _switch(server: RunningServer, repo: Path, model: str, config: dict) -> None:
    (repo / model / "config.yaml").write_text(yaml.safe_dump(config))
    response = httpx.post(f"{server.url}/v2/repository/models/{model}/load", timeout=300)
    response.raise_for_status()


def _shadow_counts(server: RunningServer, model: str, version: int) -> dict:
    stats = httpx.get(f"{server.url}/v2/models/{model}/versions/{version}/stats", timeout=30).json()
    shadow = stats["model_stats"][0]["ortserve"].get("shadow")
    return {} if shadow is None else {key: shadow[key] for key in ("offered", "compared", "dropped", "failed")}


def shadow(settings: Settings) -> list[dict]:
    files = model_files()
    heavy = TRAFFIC / "mlp-8192.onnx"
    if not heavy.exists():
        save(mlp(hidden=8192, seed=1), TRAFFIC / "built", "mlp_heavy")
        heavy.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(TRAFFIC / "built" / "mlp_heavy" / "1" / "model.onnx", heavy)
    cases = [  # the served model is the newest version, so that no routing field is needed without a shadow
        ("mlp", {1: files["mlp"], 2: heavy, 3: files["mlp"]}, 8, "throughput"),
        ("resnet50", {1: files["resnet50_int8"], 2: files["resnet50"], 3: files["resnet50"]}, 1, "p50"),
    ]
    arms = {"none": None, "cheap": 1, "expensive": 2}
    results = []
    for model, versions, concurrency, metric in cases:
        if model not in settings.shadow_models:
            continue
        base = {"version_policy": "all"}
        repo = _repository(f"shadow-{model}", {model: versions}, {model: base})
        with start_server(repo, TRAFFIC / f"shadow-{model}.log", "--model-control", "explicit") as server:
            runs: dict[str, list[LoadResult]] = {arm: [] for arm in arms}
            counts: dict[str, list[dict]] = {arm: [] for arm in arms}
            for _ in range(settings.rounds):
                for arm, target in arms.items():
                    config = base if target is None else {**base, "routing": {"shadow": {"target": target}}}
                    _switch(server, repo, model, config)
                    before = _shadow_counts(server, model, 3)
                    runs[arm].append(closed_loop(settings, server, model, "v2-grpc", concurrency))  # type: ignore[arg-type]
                    after = _shadow_counts(server, model, 3)
                    counts[arm].append({key: after[key] - before.get(key, 0) for key in after})
                    print(model, arm, runs[arm][-1], counts[arm][-1], flush=True)
        baseline = _median(runs["none"], metric)
        for arm in arms:
            value = _median(runs[arm], metric)
            results.append({
                "model": model, "concurrency": concurrency, "shadow": arm, "metric": metric,
                "median": value, "ratio_to_none": value / baseline,
                "runs": [vars(run) for run in runs[arm]], "shadow_counts": counts[arm],
            })
    return results


def _median(runs: list[LoadResult], metric: str) -> float:
    return statistics.median(run.requests_per_s if metric == "throughput" else run.p50_ms for run in runs)


def group(settings: Settings) -> list[dict]:
    files = model_files()
    repo = _repository("group", {"resnet50": {1: files["resnet50"]}, "resnet50_int8": {1: files["resnet50_int8"]}},
                       {"resnet50_group": {"group": {"members": ["resnet50", "resnet50_int8"]}}})
    results = []
    with start_server(repo, TRAFFIC / "group.log", "--model-control", "explicit") as server:
        for concurrency in (1, 8):
            runs: dict[str, list[LoadResult]] = {name: [] for name in ("resnet50", "resnet50_int8", "resnet50_group")}
            went: list[dict[str, int]] = []
            for _ in range(settings.rounds):
                for name in runs:
                    before = _group_members(server)
                    runs[name].append(closed_loop(settings, server, name, "v2-grpc", concurrency))  # type: ignore[arg-type]
                    if name == "resnet50_group":
                        after = _group_members(server)
                        went.append({member: after[member] - before[member] for member in after})
                    print(concurrency, name, runs[name][-1], went[-1:] if name == "resnet50_group" else "", flush=True)
            for name, measured in runs.items():
                results.append({
                    "model": name, "concurrency": concurrency,
                    "throughput_per_s": _median(measured, "throughput"), "p50_ms": _median(measured, "p50"),
                    "runs": [vars(run) for run in measured], **({"requests_went": went} if "group" in name else {}),
                })
    return results


def _group_members(server: RunningServer) -> dict[str, int]:
    stats = httpx.get(f"{server.url}/v2/models/resnet50_group/stats", timeout=30).json()
    members = stats["model_stats"][0]["ortserve"]["group"]["members"]
    return {member: entry["chosen"] for member, entry in members.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perf-analyzer", type=Path, required=True)
    parser.add_argument("--cuda-lib", required=True)
    parser.add_argument("--seconds", type=int, default=8, help="measurement window per point")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians are reported")
    parser.add_argument("--only", nargs="+", choices=["shadow", "group"], default=["shadow", "group"])
    parser.add_argument("--shadow-models", nargs="+", choices=["mlp", "resnet50"], default=["mlp", "resnet50"])
    settings = parser.parse_args(namespace=Settings())
    started = time.time()
    report: dict = {"machine": machine(), "load_average_before": load_average()}
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-traffic.json"
    for part, measure in (("shadow", shadow), ("group", group)):
        if part in settings.only:
            report[part] = measure(settings)
            report["load_average_after"] = load_average()
            report["wall_s"] = time.time() - started
            out.write_text(json.dumps(report, indent=2))  # each part as soon as it is measured
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
