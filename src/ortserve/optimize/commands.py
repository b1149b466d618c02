"""The optimize, quantize and evaluate commands: each builds one variant in a workspace, judges it against the
model it came from, and places it whole (or not at all)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ortserve.errors import InvalidInput
from ortserve.indexed_inputs import indexed_rows
from ortserve.optimize import accuracy_aware, graph, quantize
from ortserve.optimize.data import BUILTIN, RANDOM, Samples, load
from ortserve.optimize.evaluate import Comparison, compare
from ortserve.optimize.measure import open_session
from ortserve.optimize.source import ModelSource, provenance, refuse_quantized, workspace, write_variant
from ortserve.runtime.image import ImageClassifier, bind_image_classifier

Progress = Callable[[str], None]


class BudgetNotMet(InvalidInput):
    """The variant's accuracy loss is over the budget; nothing was written."""


@dataclass(frozen=True)
class Judging:
    """How variants are compared with their reference: on which samples, which output, as which task."""

    data: str | None = None  # None: built-in photographs for image classifiers, random values otherwise
    samples: int = 64
    output: str | None = None
    task: str = "auto"


@dataclass(frozen=True)
class Outcome:
    path: Path  # where the variant was written
    step: dict[str, Any]
    comparison: Comparison


def image_classifier(source: ModelSource) -> ImageClassifier | None:
    if source.config.image is None or source.model_dir is None:
        return None
    return bind_image_classifier(source.name, source.model_dir, source.config.image, source.signature,
                                 source.origin.parent)


def samples_for(source: ModelSource, spec: str | None, count: int, seed: int) -> Samples:
    classifier = image_classifier(source)
    if spec is None:
        spec = BUILTIN if classifier is not None else RANDOM
    rows = indexed_rows(source.path) if spec == RANDOM else None
    return load(spec, source.signature, classifier, count, seed, rows)


def judge(source: ModelSource, evaluation: Samples, judging: Judging) -> Callable[[Path], Comparison]:
    """A function that compares a candidate file with the source model on the evaluation samples."""
    reference_session = open_session(source.path)
    is_image = source.config.image is not None

    def run(candidate: Path) -> Comparison:
        return compare(reference_session, open_session(candidate), evaluation, judging.output, judging.task, is_image)

    return run


def optimize(source: ModelSource, kind: str, output: Path | None, judging: Judging, level: str = graph.PORTABLE_LEVEL,
             simplifier: str = "onnxslim", keep_io_types: bool = True) -> Outcome:
    """An FP32 (or FP16) rewrite of the graph; its outputs are compared with the original's."""
    started = time.perf_counter()
    evaluation = samples_for(source, judging.data, judging.samples, seed=1)
    with workspace(source, output) as work:
        built = work / "model.onnx"
        if kind == "ort":
            step = graph.ort_optimize(source.path, built, level)
        elif kind == "simplify":
            step = graph.simplify(source.path, built, simplifier)
        elif kind == "transformer":
            step = graph.fuse_transformer(source.path, built)
        elif kind == "fp16":
            step = graph.to_fp16(source.path, built, keep_io_types)
        else:
            raise InvalidInput(f"unknown optimization {kind!r}; expected ort, simplify, transformer or fp16")
        comparison = judge(source, evaluation, judging)(built)
        record = provenance(source, {**step, "evaluation": comparison.as_dict()}, started)
        path = write_variant(source, built, output, record)
    return Outcome(path, step, comparison)


@dataclass(frozen=True)
class QuantizeRequest:
    mode: str = "static"  # or "dynamic"
    calibration: str | None = None  # sample data spec, for static mode
    calibration_samples: int = 128
    static: quantize.StaticOptions = field(default_factory=quantize.StaticOptions)
    dynamic_op_types: tuple[str, ...] = quantize.DYNAMIC_OP_TYPES
    budget: float | None = None  # largest accepted loss; static mode then searches nodes to keep in FP32


def quantize_model(source: ModelSource, request: QuantizeRequest, output: Path | None, judging: Judging,
                   progress: Progress = print) -> tuple[Outcome, accuracy_aware.SearchResult | None]:
    """Static (calibrated QDQ) or dynamic INT8, judged against the source; over the budget, nothing is written."""
    started = time.perf_counter()
    refuse_quantized(source.path, "quantize the FP32 model it came from instead")
    if request.mode not in ("static", "dynamic"):
        raise InvalidInput(f"unknown quantization mode {request.mode!r}; expected static or dynamic")
    if request.mode == "static" and request.calibration is None:
        raise InvalidInput("static quantization needs calibration data: --calibration-data FILE.npz, a folder of "
                           "images, 'samples' (built-in photographs) or 'random'")
    evaluation = samples_for(source, judging.data, judging.samples, seed=1)
    search = None
    with workspace(source, output) as work:
        pre = work / "pre.onnx"
        prepared = quantize.preprocess(source.path, pre)
        check = judge(source, evaluation, judging)
        built = work / "model.onnx"
        if request.mode == "dynamic":
            step = quantize.dynamic(pre, built, request.dynamic_op_types, request.static.per_channel,
                                    request.static.exclude)
            comparison = check(built)
        else:
            assert request.calibration is not None
            progress(f"calibrating on {request.calibration} ...")
            calibration = samples_for(source, request.calibration, request.calibration_samples, seed=0)
            if request.budget is None:
                step = quantize.static(pre, built, calibration, request.static)
                comparison = check(built)
            else:
                search = accuracy_aware.search(pre, work, calibration, evaluation, request.static, request.budget,
                                               check, progress=progress)
                built, comparison = search.model, search.comparison
                step = {**search.record, "accuracy_aware": search.as_dict()}
        if request.budget is not None and comparison.loss > request.budget:
            raise BudgetNotMet(f"accuracy loss {comparison.loss:.4f} is over the budget {request.budget:g}; nothing "
                               f"was written\n{comparison.text()}" + (f"\n{search.text()}" if search else ""))
        record = provenance(source, {**step, "pre_processing": prepared, "evaluation": comparison.as_dict()},
                            started)
        path = write_variant(source, built, output, record)
    return Outcome(path, step, comparison), search


def evaluate(reference: ModelSource, variant: Path, judging: Judging) -> Comparison:
    evaluation = samples_for(reference, judging.data, judging.samples, seed=1)
    if not variant.is_file():
        raise InvalidInput(f"variant {str(variant)!r} does not exist")
    return judge(reference, evaluation, judging)(variant)

