"""Keras layer coverage: each model of `ortserve.examples.keras_layers`, written by Keras 3 (.keras, SavedModel)
and by Keras 2 (tf-keras: .h5, .keras, SavedModel), through `ortserve convert` (tf2onnx, checker, parity with the
Keras that wrote it), then served in process by ortserve's engine and compared with the Keras model's own answer.

    python benchmarks/keras_layer_coverage.py [--only attention,masked_lstm] [--sources keras3-keras,keras2-h5]
results: benchmarks/results/keras-layer-coverage.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RESULTS = Path(__file__).parent / "results"
SOURCES = ("keras3-keras", "keras3-saved_model", "keras2-h5", "keras2-keras", "keras2-saved_model")


def _save(model: Any, source: str, work: Path) -> Path:
    import tensorflow as tf

    if source.endswith("saved_model"):
        path = work / "saved_model"
        if source.startswith("keras3"):
            model.export(str(path), verbose=False)
        else:
            tf.saved_model.save(model, str(path))
        return path
    path = work / f"model.{source.split('-')[1]}"
    model.save(path)
    return path


def _served_error(model: Any, version_dir: Path, repository: Path) -> float:
    """The largest difference between the engine's answers and the Keras model's on the parity samples' first
    rows (the served model's inputs, as provenance names them)."""
    import ortserve

    provenance = json.loads((version_dir / "provenance.json").read_text())
    rng = np.random.default_rng(1)
    feeds = {}
    for spec in provenance["inputs"]:
        shape = [2 if i == 0 else 8 if isinstance(d, str) else d for i, d in enumerate(spec["dims"])]
        dtype = np.dtype(spec["dtype"])
        feeds[spec["name"]] = (rng.integers(0, 2, shape) if dtype.kind in "iub" else rng.uniform(-1, 1, shape)
                               ).astype(dtype)
    # by name: a SavedModel's signature sorts its inputs, the model's own list need not be sorted
    expected = model(feeds if len(feeds) > 1 else next(iter(feeds.values())), training=False)
    expected = expected if isinstance(expected, dict) else dict(zip(provenance["outputs"], expected if isinstance(
        expected, list | tuple) else [expected], strict=True))
    with ortserve.Engine(repository) as engine:
        served = engine.predict("m", feeds)
    return max(float(np.max(np.abs(np.asarray(expected[name], np.float64) - served[name].astype(np.float64))))
               for name in provenance["outputs"])


def run_case(name: str, source: str) -> dict[str, Any]:
    from ortserve.convert.pipeline import ConvertRequest, convert
    from ortserve.examples.keras_layers import KERAS_2_ONLY, KERAS_3_ONLY, build

    keras_2 = source.startswith("keras2")
    if (keras_2 and name in KERAS_3_ONLY) or (not keras_2 and name in KERAS_2_ONLY):
        return {"case": name, "source": source, "result": "n/a"}
    if keras_2:
        import tf_keras as keras
    else:
        import keras
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model = build(name, keras)
        try:
            result = convert(ConvertRequest(source=str(_save(model, source, work)), repository=work / "repo",
                                            model="m", inputs=[], unsafe_deserialization=True))
        except Exception as exc:  # the table records every failure, by its one line
            return {"case": name, "source": source, "result": "failed",
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        worst = max(output.max_abs_error for output in result.parity.outputs)
        served = _served_error(model, result.version_dir, work / "repo")
    return {"case": name, "source": source, "result": "ok" if result.parity.passed else "parity failed",
            "parity_max_abs": worst, "served_max_abs": served, "seconds": round(time.perf_counter() - started, 1)}


def markdown(rows: list[dict[str, Any]], sources: list[str]) -> str:
    cases = list(dict.fromkeys(row["case"] for row in rows))
    by = {(row["case"], row["source"]): row for row in rows}

    def cell(row: dict[str, Any] | None) -> str:
        if row is None or row["result"] == "n/a":
            return "n/a"
        if row["result"] != "ok":
            return f"**{row['result']}**: {row.get('error', '')}"
        return f"ok ({row['parity_max_abs']:.1e} / {row['served_max_abs']:.1e})"

    lines = ["| layers | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    lines += [f"| {case} | " + " | ".join(cell(by.get((case, source))) for source in sources) + " |"
              for case in cases]
    return "\n".join(lines) + "\n"


def main() -> int:
    from ortserve.examples.keras_layers import CASES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, of {', '.join(SOURCES)}")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    sources = args.sources.split(",")
    rows = []
    for name in names:
        for source in sources:
            row = run_case(name, source)
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "keras-layer-coverage.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "keras-layer-coverage.md").write_text(markdown(rows, sources))
    failed = [row for row in rows if row["result"] not in {"ok", "n/a"}]
    print(f"{len(rows) - len(failed)} of {len(rows)} ok or not applicable; failed: "
          f"{[(row['case'], row['source']) for row in failed]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
