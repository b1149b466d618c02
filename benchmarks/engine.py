"""ortserve.Engine in process, on the MLP 784-256-10 with no config.yaml, against bare ONNX Runtime:

- predict of one row: p50 and p99 over many calls, against a bare session.run of the same row (the engine's
  own session options: it may run the MLP on one thread, so both bare sessions are timed);
- predict_concurrent of 10,000 single-row requests from 8 threads, against the in-process best-batch ceiling and
  against the seeds' pattern (a thread pool of 8 calling session.run per request);
- predict_batch of 1,000 single-row requests, against the ceiling; and of one 1,000-row request, against bare
  session.run on the same max_batch_size slices.

Rounds alternate (the machine is shared); medians are reported.
    python benchmarks/engine.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
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


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _percentiles(call, count: int) -> tuple[float, float]:
    times = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3


def _mean_us(call, count: int = 20000) -> float:
    for _ in range(count // 10):
        call()
    start = time.perf_counter_ns()
    for _ in range(count):
        call()
    return (time.perf_counter_ns() - start) / count / 1e3


def one_round(engine: ortserve.Engine, path: Path, rows: list[np.ndarray]) -> dict:
    row = rows[0]
    served = engine.model("mlp").resolve()
    assert served.signature is not None
    result: dict = {  # parts of the core's per-request path, timed alone (mean of 20,000 calls)
        "check_inputs_us": _mean_us(lambda: check_inputs(served.signature, {"input": row}, served.max_batch_size)),
        "resolve_us": _mean_us(lambda: engine.model("mlp").resolve()),
    }
    bare = {threads: _session(path, threads) for threads in (0, 1)}
    for threads, session in bare.items():
        _percentiles(lambda s=session: s.run(None, {"input": row}), 2000)
        result[f"bare_threads_{threads}_p50_us"], result[f"bare_threads_{threads}_p99_us"] = _percentiles(
            lambda s=session: s.run(None, {"input": row}), 20000)
    _percentiles(lambda: engine.predict("mlp", row), 2000)
    result["predict_p50_us"], result["predict_p99_us"] = _percentiles(lambda: engine.predict("mlp", row), 20000)
    best_bare = min(result["bare_threads_0_p50_us"], result["bare_threads_1_p50_us"])
    result["predict_added_p50_us"] = result["predict_p50_us"] - best_bare

    ceiling = max((measure_ceiling(session, [1, 8, 16, 32, 64], 1.0) for session in bare.values()),
                  key=lambda found: found.rows_per_s)
    result["ceiling_rows_per_s"], result["ceiling_batch"] = ceiling.rows_per_s, ceiling.batch_size
    # the default max_batch_size (32) bounds what the engine's batches can reach
    result["ceiling_at_32_rows_per_s"] = ceiling.by_batch_size[32]

    start = time.perf_counter()
    engine.predict_concurrent("mlp", rows, max_workers=8)
    result["concurrent_rows_per_s"] = len(rows) / (time.perf_counter() - start)
    fastest = min(bare.values(), key=lambda session: _percentiles(lambda: session.run(None, {"input": row}), 500)[0])
    with ThreadPoolExecutor(8) as pool:
        start = time.perf_counter()
        list(pool.map(lambda item: fastest.run(None, {"input": item}), rows))
        result["thread_pool_rows_per_s"] = len(rows) / (time.perf_counter() - start)

    batch = rows[:1000]
    start = time.perf_counter()
    engine.predict_batch("mlp", batch)
    result["batch_rows_per_s"] = len(batch) / (time.perf_counter() - start)

    stacked = np.concatenate(batch)  # the same 1,000 rows as one request, against bare runs of the same slices
    limit = engine.model("mlp").resolve().max_batch_size
    start = time.perf_counter()
    engine.predict_batch("mlp", [stacked])
    result["batch_one_request_rows_per_s"] = len(stacked) / (time.perf_counter() - start)
    start = time.perf_counter()
    for begin in range(0, len(stacked), limit):
        fastest.run(None, {"input": stacked[begin:begin + limit]})
    result["bare_slices_rows_per_s"] = len(stacked) / (time.perf_counter() - start)
    result["batch_one_request_vs_bare_slices"] = (result["batch_one_request_rows_per_s"]
                                                  / result["bare_slices_rows_per_s"])

    result["concurrent_vs_ceiling"] = result["concurrent_rows_per_s"] / result["ceiling_rows_per_s"]
    result["concurrent_vs_thread_pool"] = result["concurrent_rows_per_s"] / result["thread_pool_rows_per_s"]
    result["batch_vs_ceiling"] = result["batch_rows_per_s"] / result["ceiling_rows_per_s"]
    result["batch_vs_ceiling_at_32"] = result["batch_rows_per_s"] / result["ceiling_at_32_rows_per_s"]
    result["concurrent_vs_ceiling_at_32"] = result["concurrent_rows_per_s"] / result["ceiling_at_32_rows_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path = WORK / "mlp" / "1" / "model.onnx"
    if not path.exists():
        save(mlp(), WORK, "mlp")
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((1, 784)).astype(np.float32) for _ in range(10_000)]
    report: dict = {"machine": machine(), "load_average_before": load_average(), "rounds": []}
    with ortserve.Engine(WORK) as engine:
        for index in range(args.rounds):
            measured = one_round(engine, path, rows)
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
