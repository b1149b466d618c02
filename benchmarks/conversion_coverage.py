"""Conversion coverage: every architecture in keras.applications (random weights: none ship here), saved as
.keras, through `ortserve convert` (tf2onnx, checker, parity with Keras), then served in process by ortserve's
engine on one image. One process per model, each with a time limit; writes a JSON and a Markdown table.

Each model is built by `ortserve.examples.keras_applications.build`: BatchNormalization statistics set from
random images, as training leaves them, and parity checked on images from the same range (why: that module).

    python benchmarks/conversion_coverage.py [--only MobileNetV3Small,ConvNeXtTiny] [--timeout 900] [--resume]
results: benchmarks/results/conversion-coverage.{json,md}
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

BUILD = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from pathlib import Path
from ortserve.examples.keras_applications import build
name, work = sys.argv[1], Path(sys.argv[2])
started = time.perf_counter()
build(name).save(work / "model.keras")
print(json.dumps({"build": round(time.perf_counter() - started, 1)}))
"""

# a process of its own: TensorFlow keeps the memory of the statistics pass, and EfficientNetB7's conversion then
# ran out of this machine's 24 GB
CONVERT_AND_SERVE = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from pathlib import Path
import numpy as np
import ortserve
from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.examples.keras_applications import PIXEL_RANGE
work = Path(sys.argv[2])
started = time.perf_counter()
result = convert(ConvertRequest(source=str(work / "model.keras"), repository=work / "repo", model="m", inputs=[],
                                value_range=PIXEL_RANGE))
converted = time.perf_counter()
provenance = json.loads((result.version_dir / "provenance.json").read_text())
(spec,) = provenance["inputs"]
shape = [1 if isinstance(d, str) and i == 0 else 224 if isinstance(d, str) else d for i, d in enumerate(spec["dims"])]
with ortserve.Engine(work / "repo") as engine:
    served = engine.predict("m", {spec["name"]: np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)})
print(json.dumps({"exporter": result.exporter, "parity": provenance["parity"], "input": spec,
                  "outputs": {k: list(v.shape) for k, v in served.items()},
                  "seconds": {"convert": round(converted - started, 1),
                              "serve": round(time.perf_counter() - converted, 1)}}))
"""


def _error(done: subprocess.CompletedProcess[str]) -> str:
    """The failure in one line: the exception the model's process ended with, or the signal that ended it."""
    if done.returncode < 0:
        return f"killed by signal {-done.returncode} (out of memory?)"
    raised = [line for line in done.stderr.splitlines() if _RAISED.match(line)]
    return raised[-1][:300] if raised else f"exit {done.returncode}"


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)|ortserve\.errors\.\w+)\b.*:")


def architectures() -> list[str]:
    listing = subprocess.run([sys.executable, "-c", "import keras, inspect; print(' '.join(n for n, f in "
                              "inspect.getmembers(keras.applications, inspect.isfunction) if n[0].isupper()))"],
                             capture_output=True, text=True, check=True)
    return listing.stdout.split()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated architecture names")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    parser.add_argument("--resume", action="store_true", help="keep the results on record, run the others")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else architectures()
    suffix = "" if not args.only else "-subset"
    done_file = RESULTS / f"conversion-coverage{suffix}.json"
    rows = json.loads(done_file.read_text()) if args.resume and done_file.is_file() else []
    recorded = {row["architecture"] for row in rows}
    for name in [name for name in names if name not in recorded]:
        rows.append(_one(name, args.timeout))
        print(json.dumps(rows[-1]), flush=True)
        _write(rows, suffix)  # after every model: a run cut short keeps what it measured
    print(f"{sum(row['ok'] for row in rows)} of {len(rows)} converted, matched and served")
    return 0


def _one(name: str, timeout: float) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ortserve-coverage-") as work:
        try:
            built = subprocess.run([sys.executable, "-c", BUILD, name, work], capture_output=True, text=True,
                                   timeout=timeout)
            if built.returncode != 0:
                row = {"architecture": name, "ok": False, "error": f"building it: {_error(built)}"}
            else:
                done = subprocess.run([sys.executable, "-c", CONVERT_AND_SERVE, name, work], capture_output=True,
                                      text=True, timeout=timeout)
                if done.returncode == 0:
                    row = {"architecture": name, "ok": True, **json.loads(done.stdout.strip().splitlines()[-1])}
                    row["seconds"] = {**json.loads(built.stdout.strip().splitlines()[-1]), **row["seconds"]}
                else:
                    row = {"architecture": name, "ok": False, "error": _error(done)}
        except subprocess.TimeoutExpired:
            row = {"architecture": name, "ok": False, "error": f"over {timeout:.0f} s"}
    row["wall_s"] = round(time.perf_counter() - started, 1)
    return row


def _write(rows: list[dict], suffix: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    rows = sorted(rows, key=lambda row: row["architecture"])
    (RESULTS / f"conversion-coverage{suffix}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| architecture | converts, parity, serves | exporter | max abs error | convert s | error |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        worst = max((o["max_abs_error"] for o in row["parity"]["outputs"]), default=0) if row["ok"] else None
        lines.append(f"| {row['architecture']} | {'yes' if row['ok'] else '**no**'} | {row.get('exporter', '')} | "
                     f"{'' if worst is None else f'{worst:.2g}'} | {row.get('seconds', {}).get('convert', '')} | "
                     f"{row.get('error', '')} |")
    (RESULTS / f"conversion-coverage{suffix}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
