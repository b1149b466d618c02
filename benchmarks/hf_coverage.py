"""Conversion coverage of Hugging Face sources: each common `transformers` family (ortserve.examples.hf_families:
32 of them, from BERT and GPT-2 to Llama, Qwen2, DINOv2 and HuBERT, with question-answering, multiple-choice
and segmentation heads), built from a small config with random weights, saved with save_pretrained, through
`ortserve convert` (export, checker, parity with transformers). Writes a JSON and a Markdown table.

    python benchmarks/hf_coverage.py
results: benchmarks/results/hf-coverage.{json,md}
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.errors import OrtServeError
from ortserve.examples.hf_families import FAMILIES, save_family

RESULTS = Path(__file__).parent / "results"


class _Fallbacks(logging.Handler):
    """The exporter's warnings: why torch.export gave way to the TorchScript exporter."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.reasons.append(record.getMessage())


def main() -> None:
    rows = []
    fallbacks = _Fallbacks()
    logging.getLogger("ortserve.convert.pytorch").addHandler(fallbacks)
    for name in FAMILIES:
        fallbacks.reasons.clear()
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            path = save_family(name, Path(scratch))
            try:
                result = convert(ConvertRequest(source=str(path), repository=Path(scratch) / "repo", model=name,
                                                inputs=[]))
            except OrtServeError as exc:
                rows.append({"family": name, "error": str(exc).splitlines()[0]})
                print(f"{name}: {rows[-1]['error']}", flush=True)
                continue
            provenance = json.loads((result.version_dir / "provenance.json").read_text())
            rows.append({
                "family": name, "architecture": provenance["architecture"], "task": provenance["task"],
                "exporter": result.exporter, "fallback": " ".join(fallbacks.reasons),
                "inputs": {spec["name"]: spec["dims"] for spec in provenance["inputs"]},
                "outputs": provenance["outputs"],
                "max_abs_error": max(output.max_abs_error for output in result.parity.outputs),
                "seconds": round(time.perf_counter() - started, 1)})
            print(f"{name}: {rows[-1]['exporter']}, max abs error {rows[-1]['max_abs_error']:.2g}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hf-coverage.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| family | architecture | task | exporter | inputs (dynamic axes) | outputs | parity max abs error | "
             "seconds |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['family']} | | | failed: {row['error']} | | | | |")
            continue
        inputs = ", ".join(f"`{name}` {dims}" for name, dims in row["inputs"].items())
        exporter = row["exporter"] + (f" ({row['fallback'][:160]})" if row["fallback"] else "")
        lines.append(f"| {row['family']} | {row['architecture']} | {row['task']} | {exporter} | {inputs} | "
                     f"{', '.join(row['outputs'])} | {row['max_abs_error']:.1e} | {row['seconds']} |")
    (RESULTS / "hf-coverage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
