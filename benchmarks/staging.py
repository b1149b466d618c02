"""What stacking requests into a batch costs between session.run calls: into a fresh array each batch (numpy's
concatenate), into a buffer the thread reuses (ortserve.runtime.staging), and not at all (slices of one array,
the floor). MLP 784-256-10 on ONNX Runtime's default pool, 1,000 one-row requests stacked 256 rows at a time,
then run; the outputs split into one view per request as the Engine answers them. Reports minor page faults and
the time of each phase per 1,000 rows (medians of the rounds; the three ways take turns within each round).

    python benchmarks/staging.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine import mlp_file, session
from ortserve.bench.machine import load_average, machine
from ortserve.runtime import staging

ROWS, SLICE, REPEATS = 1000, 256, 10


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _measure(session: ort.InferenceSession, stack: Callable[[int], np.ndarray]) -> dict[str, float]:
    """Per 1,000 rows: minor faults and us spent stacking, running and splitting."""
    spent = {"stack_us": 0.0, "run_us": 0.0, "split_us": 0.0}
    faults = _faults()
    for _ in range(REPEATS):
        for start in range(0, ROWS, SLICE):
            began = time.perf_counter_ns()
            batch = stack(start)
            stacked = time.perf_counter_ns()
            (logits,) = session.run(None, {"input": batch})
            ran = time.perf_counter_ns()
            answers = [{"logits": row} for row in logits.reshape(len(batch), 1, -1)]
            split = time.perf_counter_ns()
            spent["stack_us"] += (stacked - began) / 1e3
            spent["run_us"] += (ran - stacked) / 1e3
            spent["split_us"] += (split - ran) / 1e3
            del answers
    result = {name: value / REPEATS for name, value in spent.items()}
    result["faults"] = (_faults() - faults) / REPEATS
    result["total_us"] = result["stack_us"] + result["run_us"] + result["split_us"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pool = session(mlp_file(), 0)
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((1, 784)).astype(np.float32) for _ in range(ROWS)]
    contiguous = np.concatenate(rows)
    ways: dict[str, Callable[[int], np.ndarray]] = {
        "fresh": lambda start: np.concatenate(rows[start:start + SLICE]),
        "staged": lambda start: staging.stack("input", rows[start:start + SLICE], len(rows[start:start + SLICE])),
        "view": lambda start: contiguous[start:start + SLICE],
    }
    for stack in ways.values():
        _measure(pool, stack)
    report: dict = {"machine": machine(), "load_average_before": load_average(), "rounds": []}
    for index in range(args.rounds):
        measured = {name: _measure(pool, stack) for name, stack in ways.items()}
        report["rounds"].append(measured)
        print(index, {name: {key: round(value) for key, value in figures.items()}
                      for name, figures in measured.items()}, flush=True)
    report["median"] = {name: {key: statistics.median(r[name][key] for r in report["rounds"])
                               for key in report["rounds"][0][name]} for name in ways}
    report["load_average_after"] = load_average()
    out = Path(__file__).parent / "results" / f"{time.strftime('%Y-%m-%d')}-staging.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["median"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
