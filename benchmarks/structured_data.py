"""Structured data served as TF Serving's clients send it: a Keras model of seven columns with its preprocessing
layers inside (ortserve.examples.structured_data: StringLookup and IntegerLookup tables, Normalization,
Discretization, CategoryEncoding), converted with no config.yaml written by hand: its tables become ONNX
LabelEncoders.

In one run:
- the ceiling: the converted ONNX model in process (a bare session.run, with the server's session options), fed
  the rows as column arrays at several batch sizes; the best rows/s is the ceiling;
- served: one row per request over TF Serving's REST API (`{"instances": [{column: [value], ...}]}`, wrk, bodies
  of 256 different rows taken in turn) at c=1 and c=8: requests/s, p50/p99, and the ratio to the ceiling.

Usage: bash benchmarks/run.sh structured_data.py [--seconds 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from ortserve.bench.loadgen import wrk
from ortserve.bench.machine import load_average, machine
from ortserve.bench.server import start_server
from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.examples.structured_data import adoption_model, columns, random_rows
from ortserve.repository.config import load_config
from ortserve.runtime.session import create_session

WORK = Path(__file__).parent / "work"
RESULTS = Path(__file__).parent / "results"
CEILING_BATCHES = [1, 8, 32, 128]
MODEL = "adoption"


def build(directory: Path) -> Path:
    """The Keras model exported as a SavedModel and converted into a fresh repository; the repository."""
    shutil.rmtree(directory, ignore_errors=True)
    adoption_model().export(str(directory / "saved_model"))
    repository = directory / "repository"
    convert(ConvertRequest(source=str(directory / "saved_model"), repository=repository, model=MODEL, inputs=[]))
    return repository


def ceiling(repository: Path, rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    model_dir = repository / MODEL
    session = create_session(MODEL, model_dir / "1" / "model.onnx", load_config(model_dir), 0)

    def rate(batch: int) -> float:
        feeds = [columns(rows[start:start + batch]) for start in range(0, len(rows) - batch + 1, batch)]
        session.run(None, feeds[0])
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for feed in feeds:
                session.run(None, feed)
                done += batch
        return done / (time.perf_counter() - began)

    rates = {batch: rate(batch) for batch in CEILING_BATCHES}
    best = max(rates, key=rates.__getitem__)
    return {"rows_per_s": rates[best], "batch": best, "by_batch": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--perf-analyzer", help=argparse.SUPPRESS)  # run.sh passes these to every script
    parser.add_argument("--cuda-lib", help=argparse.SUPPRESS)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    repository = build(WORK / "structured-data")
    rows = random_rows(256)
    bodies = WORK / "structured-data-bodies.jsonl"
    bodies.write_bytes(b"\n".join(
        orjson.dumps({"instances": [{name: value if isinstance(value, list) else [value]
                                     for name, value in row.items()}]}) for row in rows))
    runs: list[dict[str, Any]] = []
    with start_server(repository, WORK / "structured-data-server.log") as server:
        for repeat in range(args.repeats):  # interleaved: ceiling, then the served runs, while the machine is alike
            run: dict[str, Any] = {"load_before": load_average(),
                                   "ceiling": ceiling(repository, rows, args.seconds / 2)}
            best = run["ceiling"]["rows_per_s"]
            for concurrency in (1, 8):
                result = wrk(f"{server.url}/v1/models/{MODEL}:predict", bodies, concurrency,
                             headers={"Content-Type": "application/json"}, duration_s=args.seconds, rotate=True)
                point = run[f"c{concurrency}"] = {"requests_per_s": result.requests_per_s, "p50_ms": result.p50_ms,
                                                  "p99_ms": result.p99_ms, "errors": result.errors,
                                                  "ratio": result.requests_per_s / best}
                print(f"run {repeat + 1} c={concurrency}: {point['requests_per_s']:.0f} req/s (ceiling {best:.0f} "
                      f"rows/s at batch {run['ceiling']['batch']}, {run['ceiling']['by_batch'][1]:.0f} at batch 1; "
                      f"ratio {point['ratio']:.3f}), p50 {point['p50_ms']:.2f} ms, p99 {point['p99_ms']:.2f} ms, "
                      f"{point['errors']} errors")
            runs.append(run)
    median = {f"{point}_{field}": statistics.median(run[point][field] for run in runs)
              for point in ("c1", "c8") for field in ("requests_per_s", "p50_ms", "ratio")}
    median["ceiling_rows_per_s"] = statistics.median(run["ceiling"]["rows_per_s"] for run in runs)
    median["batch1_rows_per_s"] = statistics.median(run["ceiling"]["by_batch"][1] for run in runs)
    print(json.dumps(median, indent=1))
    record = {"machine": machine(), "runs": runs, "median": median,
              "command": f"bash benchmarks/run.sh structured_data.py --seconds {args.seconds} --repeats {args.repeats}"}
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-structured-data.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
