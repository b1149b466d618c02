"""ortserve.Engine in process, on the MLP 784-256-10 with no config.yaml, against bare ONNX Runtime:

- predict of one row: p50 and p99, against a bare session.run of the same row (both thread settings timed:
  the engine may run the MLP on one thread);
- predict_concurrent of 10,000 single-row requests from 8 threads, against the in-process best-batch ceiling and
  against the seeds' pattern (a thread pool of 8 calling session.run per request);
- predict_batch of 1,000 single-row requests, and of one 1,000-row request, against the ceiling.

The ceiling is the best rows per second of a bare session over both thread settings (ONNX Runtime's default
pool, one thread) and batch sizes 1 to 512, found once; it is then re-measured beside every engine figure
(its best setting, back to back over the same rows) because this shared machine's speed moves by up to 2x
within a minute. Each round alternates the engine and its reference; ratios are taken per round, medians
reported.
    python benchmarks/engine.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

import ortserve
from ortserve.bench.ceiling import measure_ceiling
from ortserve.bench.machine import load_average, machine
from ortserve.examples.models import mlp, save
from ortserve.runtime.validate import check_inputs

WORK = Path(__file__).parent / "work" / "engine"
RESULTS = Path(__file__).parent / "results"
CEILING_BATCHES = [1, 8, 16, 32, 64, 128, 256, 512]


def mlp_file() -> Path:
    """The MLP 784-256-10 these benchmarks run, saved once under WORK."""
    path = WORK / "mlp" / "1" / "model.onnx"
    if not path.exists():
        save(mlp(), WORK, "mlp")
    return path


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _latencies_us(call: Callable[[], object], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e3)
    return times


def _mean_us(call: Callable[[], object], count: int = 20000) -> float:
    for _ in range(count // 10):
        call()
    start = time.perf_counter_ns()
    for _ in range(count):
        call()
    return (time.perf_counter_ns() - start) / count / 1e3


def _rate(call: Callable[[], object], rows: int, repeats: int = 3) -> float:
    """Rows per second of the fastest of `repeats` calls that each answer `rows` rows."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return rows / best


def one_round(engine: ortserve.Engine, bare: dict[int, ort.InferenceSession], best: tuple[int, int],
              rows: list[np.ndarray]) -> dict:
    row = rows[0]
    served = engine.model("mlp").resolve()
    assert served.signature is not None
    result: dict = {  # parts of the core's per-request path, timed alone (mean of 20,000 calls)
        "check_inputs_us": _mean_us(lambda: check_inputs(served.signature, {"input": row}, served.max_batch_size)),
        "resolve_us": _mean_us(lambda: engine.model("mlp").resolve()),
    }
    # one row: blocks of 2,000 calls, alternating, pooled
    times: dict[str, list[float]] = {"bare_threads_0": [], "bare_threads_1": [], "predict": []}
    calls = {"bare_threads_0": lambda: bare[0].run(None, {"input": row}),
             "bare_threads_1": lambda: bare[1].run(None, {"input": row}),
             "predict": lambda: engine.predict("mlp", row)}
    for call in calls.values():
        _latencies_us(call, 1000)
    for _ in range(5):
        for name, call in calls.items():
            times[name].extend(_latencies_us(call, 2000))
    for name, values in times.items():
        result[f"{name}_p50_us"], result[f"{name}_p99_us"] = (float(np.percentile(values, 50)),
                                                              float(np.percentile(values, 99)))
    result["predict_added_p50_us"] = result["predict_p50_us"] - min(result["bare_threads_0_p50_us"],
                                                                      result["bare_threads_1_p50_us"])

    threads, batch = best
    stacked = np.concatenate(rows)
    ceiling_session = bare[threads]

    def ceiling_run(count: int) -> None:
        for begin in range(0, count, batch):
            ceiling_session.run(None, {"input": stacked[begin:begin + batch]})

    fastest_single = min(bare.values(), key=lambda session: statistics.median(
        _latencies_us(lambda: session.run(None, {"input": row}), 500)))

    def thread_pool() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda item: fastest_single.run(None, {"input": item}), rows))

    measured = {
        "ceiling_10000": _rate(lambda: ceiling_run(len(rows)), len(rows)),
        "concurrent": _rate(lambda: engine.predict_concurrent("mlp", rows, max_workers=8), len(rows)),
        "thread_pool": _rate(thread_pool, len(rows), repeats=1),
        "ceiling_1000": _rate(lambda: ceiling_run(1000), 1000, repeats=10),
        "batch": _rate(lambda: engine.predict_batch("mlp", rows[:1000]), 1000, repeats=10),
        "batch_one_request": _rate(lambda: engine.predict_batch("mlp", [stacked[:1000]]), 1000, repeats=10),
        "predict_one_request": _rate(lambda: engine.predict("mlp", stacked[:1000]), 1000, repeats=10),
        "ceiling_1000_after": _rate(lambda: ceiling_run(1000), 1000, repeats=10),
    }
    result.update({f"{name}_rows_per_s": value for name, value in measured.items()})
    ceiling_1000 = (measured["ceiling_1000"] + measured["ceiling_1000_after"]) / 2
    result["concurrent_vs_ceiling"] = measured["concurrent"] / measured["ceiling_10000"]
    result["concurrent_vs_thread_pool"] = measured["concurrent"] / measured["thread_pool"]
    result["batch_vs_ceiling"] = measured["batch"] / ceiling_1000
    result["batch_one_request_vs_ceiling"] = measured["batch_one_request"] / ceiling_1000
    result["predict_one_request_vs_ceiling"] = measured["predict_one_request"] / ceiling_1000
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path = mlp_file()
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((1, 784)).astype(np.float32) for _ in range(10_000)]
    report: dict = {"machine": machine(), "load_average_before": load_average(), "rounds": []}
    bare = {threads: session(path, threads) for threads in (0, 1)}
    found = {threads: measure_ceiling(session, CEILING_BATCHES, 0.5) for threads, session in bare.items()}
    threads = max(found, key=lambda key: found[key].rows_per_s)
    best = (threads, found[threads].batch_size)
    report["ceiling_search"] = {f"threads_{key}": value.by_batch_size for key, value in found.items()}
    report["ceiling_setting"] = {"intra_op_threads": threads, "batch": best[1]}
    print("ceiling", report["ceiling_setting"], round(found[threads].rows_per_s), flush=True)
    with ortserve.Engine(WORK) as engine:
        served = engine.model("mlp").resolve()
        report["engine_setting"] = {"max_batch_size": served.max_batch_size, "intra_op_threads": served.threads,
                                    "warmup_us_per_row_one_thread_and_pool": {
                                        rows: [round(ns / 1e3, 3) for ns in pair]
                                        for rows, pair in served.pool_timings.items()}}
        print("engine", report["engine_setting"], flush=True)
        for index in range(args.rounds):
            measured = one_round(engine, bare, best, rows)
            report["rounds"].append(measured)
            print(index, {key: round(value, 3) for key, value in measured.items()}, flush=True)
    report["median"] = {key: statistics.median(r[key] for r in report["rounds"]) for key in report["rounds"][0]}
    report["load_average_after"] = load_average()
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-engine.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["median"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
