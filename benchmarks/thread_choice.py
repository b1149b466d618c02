"""How steadily warmup chooses between one intra-op thread and ONNX Runtime's pool for the MLP 784-256-10 with no
config.yaml, and what the choice costs a one-row `Engine.predict`: the MLP loaded `--loads` times in one process,
each load's timings at 1 and 8 rows and its choice, then predict against a bare session.run on one thread and on
the pool (blocks of 2,000 calls taking turns, three each; medians).

    python benchmarks/thread_choice.py [--loads 8]
    PYTHONPATH=/tmp/before/src python benchmarks/thread_choice.py   # another tree (git worktree add ...)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import ortserve
from engine import WORK, mlp_file, session
from ortserve.runtime import loading
from ortserve.runtime.costs import BatchCosts


def _block_median_us(call: Callable[[], object], count: int = 2000) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=8)
    args = parser.parse_args()
    path = mlp_file()
    row = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    bare = {"bare_pool": session(path, 0), "bare_one_thread": session(path, 1)}
    timings: list[str] = []
    decide = loading.one_thread_wins

    def recorded(pool: BatchCosts, one_thread: BatchCosts) -> bool:
        timings.append(" ".join(f"{rows} rows {one_thread.sizes.get(rows, 0) / 1e3:.1f} / {ns / 1e3:.1f} us"
                                for rows, ns in pool.sizes.items()))
        return decide(pool, one_thread)

    loading.one_thread_wins = recorded
    added = []
    for _ in range(args.loads):
        with ortserve.Engine(WORK) as engine:
            calls = {name: (lambda s=s: s.run(None, {"input": row})) for name, s in bare.items()}
            calls["predict"] = lambda: engine.predict("mlp", row)
            for call in calls.values():
                _block_median_us(call, 500)
            medians = {name: statistics.median(_block_median_us(call) for _ in range(3))
                       for name, call in calls.items()}
            added.append(medians["predict"] - min(medians["bare_pool"], medians["bare_one_thread"]))
            threads = engine.model("mlp").resolve().threads
            print(f"{'one thread' if threads == 1 else 'pool      '}  one thread / pool: {timings[-1]}; predict "
                  f"{medians['predict']:.1f} us, bare one thread {medians['bare_one_thread']:.1f}, bare pool "
                  f"{medians['bare_pool']:.1f}: added {added[-1]:.1f} us", flush=True)
    print(f"predict added, median of {args.loads} loads: {statistics.median(added):.1f} us")


if __name__ == "__main__":
    main()
