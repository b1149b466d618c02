"""`ortserve bench runtimes SOURCE`: the model a user has, run in process by its own framework, by ONNX Runtime
in FP32, and by ONNX Runtime in static INT8, at a few batch sizes: latency, items per second, and how far INT8
agrees with FP32 (and FP32 with the source).

It reuses the product's own steps: `convert` (export, checker, parity) writes the FP32 version and `quantize`
(calibrated static INT8, judged against FP32) the INT8 one, in a temporary repository that is removed afterwards
unless one is given. Each runtime is timed in turns, a slice of the time each, so that a change in a shared
machine's speed falls on all of them alike; every runtime keeps its framework's default threads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.convert.parity import ParityReport
from ortserve.convert.pipeline import ConvertRequest, LoadedSource, convert, load_source
from ortserve.convert.spec import InputSpec, with_rows
from ortserve.errors import InvalidInput
from ortserve.indexed_inputs import indexed_rows
from ortserve.optimize.commands import Judging, QuantizeRequest, quantize_model
from ortserve.optimize.evaluate import Comparison
from ortserve.optimize.measure import Timing, latencies_ms, open_session, timing_of
from ortserve.optimize.source import resolve

Progress = Callable[[str], None]
TURNS = 3  # each runtime is timed in this many slices, taking turns


@dataclass(frozen=True)
class RuntimesRequest:
    source: str  # as `convert` takes it: package.module:factory, a PyTorch/Keras/SavedModel/sklearn file
    inputs: list[InputSpec]
    model: str
    weights: Path | None = None
    outputs: list[str] | None = None
    calibration: str = "random"  # as `quantize --calibration-data` takes it
    calibration_samples: int = 128
    evaluation: str | None = None  # as `quantize --data` takes it (None: random values)
    samples: int = 64
    task: str = "auto"  # how INT8 is compared with FP32 (optimize.evaluate's tasks)
    batch_sizes: tuple[int, ...] = (1, 8)
    seconds: float = 3.0  # per runtime and batch size
    repository: Path | None = None  # keep the FP32 and INT8 versions here; None: a temporary one


@dataclass(frozen=True)
class Row:
    runtime: str
    batch_size: int
    p50_ms: float
    p90_ms: float
    items_per_s: float
    speedup: float  # items per second against the source framework at the same batch size


@dataclass(frozen=True)
class RuntimesResult:
    framework: str
    source: str
    rows: list[Row]
    parity: ParityReport  # ONNX FP32 against the source framework
    int8: Comparison | None  # static INT8 against ONNX FP32; None when the model could not be quantized ...
    int8_refused: str | None  # ... and why
    fp32_path: Path | None  # kept only with a repository
    int8_path: Path | None

    def as_dict(self) -> dict[str, Any]:
        return {"framework": self.framework, "source": self.source, "rows": [asdict(row) for row in self.rows],
                "fp32_vs_source": self.parity.as_dict(),
                "int8_vs_fp32": self.int8.as_dict() if self.int8 is not None else None,
                "int8_refused": self.int8_refused,
                "fp32_path": str(self.fp32_path) if self.fp32_path else None,
                "int8_path": str(self.int8_path) if self.int8_path else None}

    def int8_text(self) -> str:
        if self.int8 is None:
            return f"INT8: not measured: {self.int8_refused}"
        return f"INT8 against FP32: {self.int8.text()}"


@contextmanager
def _repository(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="ortserve-runtimes-") as scratch:
        yield Path(scratch)


def _feeds(inputs: list[InputSpec], batch_size: int, seed: int) -> list[np.ndarray]:
    """Random inputs of `batch_size` rows: the first dimension when it is dynamic, others at their sample size;
    ids below the rows of the tables they index, looked-up values from their vocabularies."""
    rng = np.random.default_rng(seed)
    feeds = []
    for spec in inputs:
        dims = spec.dims
        if dims and isinstance(dims[0], str):
            dims = (batch_size, *dims[1:])
        feeds.append(replace(spec, dims=dims).sample(rng, -1.0, 1.0))
    return feeds


def _timed_in_turns(calls: dict[str, Callable[[], object]], batch_size: int, seconds: float) -> dict[str, Timing]:
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(TURNS):
        for name, call in calls.items():
            latencies[name].extend(latencies_ms(call, seconds / TURNS, min_runs=3, max_runs=100_000))
    return {name: timing_of(batch_size, values) for name, values in latencies.items()}


def measure(request: RuntimesRequest, progress: Progress = print) -> RuntimesResult:
    if not request.batch_sizes or any(size < 1 for size in request.batch_sizes):
        raise InvalidInput("batch sizes must be positive")
    convert_request = ConvertRequest(source=request.source, repository=Path(), model=request.model,
                                     inputs=request.inputs, outputs=request.outputs, weights=request.weights)
    progress(f"loading {request.source} ...")
    loaded = load_source(convert_request)
    _check_batchable(loaded, request.batch_sizes)
    with _repository(request.repository) as repository:
        progress("converting to ONNX (FP32) ...")
        converted = convert(replace(convert_request, repository=repository), loaded)
        fp32_path = converted.version_dir / "model.onnx"
        progress("quantizing to static INT8 ...")
        fp32_source = resolve(request.model, repository, int(converted.version_dir.name))
        try:
            outcome, _ = quantize_model(
                fp32_source, QuantizeRequest(mode="static", calibration=request.calibration,
                                             calibration_samples=request.calibration_samples),
                None, Judging(data=request.evaluation, samples=request.samples, task=request.task), progress=progress)
        except InvalidInput as refused:  # the table still compares the source with FP32, and says why
            outcome, refusal = None, str(refused)
            progress(f"no INT8: {refusal}")
        else:
            refusal = None
        int8_path = outcome.path if outcome is not None else None
        rows = _time_all(request, loaded, fp32_path, int8_path, progress)
        kept = request.repository is not None
        return RuntimesResult(loaded.framework, request.source, rows, converted.parity,
                              outcome.comparison if outcome is not None else None, refusal,
                              fp32_path if kept else None, int8_path if kept else None)


def _check_batchable(loaded: LoadedSource, batch_sizes: tuple[int, ...]) -> None:
    fixed = [spec.name for spec in loaded.inputs if not spec.dims or not isinstance(spec.dims[0], str)]
    if fixed and max(batch_sizes) > 1:
        raise InvalidInput(f"inputs {fixed} have no dynamic batch dimension: give --batch-sizes 1, or declare "
                           "the first dimension as 'batch' (--input name:dtype:batch,...)")


def _time_all(request: RuntimesRequest, loaded: LoadedSource, fp32_path: Path, int8_path: Path | None,
              progress: Progress) -> list[Row]:
    fp32 = open_session(fp32_path)
    int8 = open_session(int8_path) if int8_path is not None else None
    names = [spec.name for spec in loaded.inputs]
    source_name = f"{loaded.framework} (source)"
    rows: list[Row] = []
    inputs = with_rows(loaded.inputs, indexed_rows(fp32_path))  # ids the source's embeddings have
    for batch_size in request.batch_sizes:
        feeds = _feeds(inputs, batch_size, seed=batch_size)
        by_name = dict(zip(names, feeds, strict=True))
        progress(f"timing batch {batch_size} ...")
        calls: dict[str, Callable[[], object]] = {
            source_name: lambda feeds=feeds: loaded.run(feeds),
            "onnxruntime FP32": lambda by_name=by_name: fp32.run(None, by_name),
        }
        if int8 is not None:
            calls["onnxruntime INT8"] = lambda by_name=by_name: int8.run(None, by_name)
        timings = _timed_in_turns(calls, batch_size, request.seconds)
        baseline = timings[source_name].rows_per_second
        rows.extend(Row(name, batch_size, timing.p50_ms, timing.p90_ms, timing.rows_per_second,
                        timing.rows_per_second / baseline) for name, timing in timings.items())
    return rows


def markdown(result: RuntimesResult) -> str:
    lines = [f"# Runtimes: {result.source} ({result.framework})", "",
             "| runtime | batch | p50 ms | p90 ms | items/s | vs source |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {row.runtime} | {row.batch_size} | {row.p50_ms:.3f} | {row.p90_ms:.3f} | {row.items_per_s:,.1f} | "
              f"{row.speedup:.2f}x |" for row in result.rows]
    lines += ["", f"- ONNX FP32 against {result.framework}: " + result.parity.text().replace("\n", " "),
              f"- {result.int8_text()}", ""]
    return "\n".join(lines)


def plot(result: RuntimesResult, path: Path) -> bool:
    """Items per second by runtime and batch size, as grouped bars; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runtimes = list(dict.fromkeys(row.runtime for row in result.rows))
    sizes = list(dict.fromkeys(row.batch_size for row in result.rows))
    width = 0.8 / len(runtimes)
    figure, axis = plt.subplots(figsize=(7, 4))
    for index, runtime in enumerate(runtimes):
        values = {row.batch_size: row.items_per_s for row in result.rows if row.runtime == runtime}
        axis.bar([position + index * width for position in range(len(sizes))], [values[size] for size in sizes],
                 width, label=runtime)
    axis.set_xticks([position + width * (len(runtimes) - 1) / 2 for position in range(len(sizes))],
                    [f"batch {size}" for size in sizes])
    axis.set_ylabel("items per second")
    axis.set_title(f"{result.source} ({result.framework})")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
