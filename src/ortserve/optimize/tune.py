"""Search variants x session settings x batch sizes on this machine; keep the fastest within the accuracy budget
(and latency SLO), publish it with its serving settings, and report every point measured."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ortserve.errors import InvalidInput
from ortserve.optimize import graph, quantize
from ortserve.optimize.commands import Judging, judge, samples_for
from ortserve.optimize.data import Samples
from ortserve.optimize.evaluate import Comparison
from ortserve.optimize.measure import batch_of, open_session, session_config, time_instances
from ortserve.optimize.source import ModelSource, provenance, refuse_quantized, workspace, write_variant
from ortserve.repository.config import load_config, update_config
from ortserve.runtime.cores import usable_cores

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
ALL_VARIANTS = ("fp32", "optimized", "simplified", "int8-static", "int8-dynamic", "fused-int8-dynamic", "fp16")


@dataclass(frozen=True)
class Point:
    variant: str
    threads: int
    instances: int  # sessions side by side (config.yaml `instances`), each with `threads` intra-op threads
    execution_mode: str
    batch_size: int
    p50_ms: float
    p90_ms: float
    rows_per_second: float
    loss: float
    eligible: bool  # within the accuracy budget and the latency SLO


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    step: dict[str, Any]
    comparison: Comparison


@dataclass(frozen=True)
class TuneResult:
    model: str
    budget: float
    latency_slo_ms: float | None
    variants: list[Variant]
    skipped: dict[str, str]  # variant -> why it was not built
    points: list[Point]
    choice: Point
    published: Path | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "accuracy_budget": self.budget, "latency_slo_ms": self.latency_slo_ms,
                "variants": {v.name: {"step": v.step, "evaluation": v.comparison.as_dict()} for v in self.variants},
                "skipped": self.skipped, "points": [asdict(p) for p in self.points], "choice": asdict(self.choice),
                "published": str(self.published) if self.published else None, "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class SearchSpace:
    variants: tuple[str, ...] = ALL_VARIANTS
    threads: tuple[int, ...] = ()  # empty: 1 and every core
    execution_modes: tuple[str, ...] = ("sequential",)
    batch_sizes: tuple[int, ...] = (1, 8)
    seconds_per_point: float = 0.7
    instances: tuple[int, ...] = ()  # empty: 1, and as many as fill the cores at each thread count

    def thread_counts(self) -> tuple[int, ...]:
        return self.threads or tuple(sorted({1, usable_cores()}))

    def layouts(self) -> list[tuple[int, int, str]]:
        """(threads, instances, execution mode) to time."""
        return [(threads, instances, mode) for threads in self.thread_counts()
                for instances in (self.instances or sorted({1, max(1, usable_cores() // threads)}))
                for mode in self.execution_modes]


def _build_variants(source: ModelSource, work: Path, space: SearchSpace, calibration: str | None,
                    calibration_samples: int, progress: Progress) -> tuple[dict[str, tuple[Path, dict[str, Any]]],
                                                                           dict[str, str]]:
    built: dict[str, tuple[Path, dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    pre: Path | None = None
    for name in space.variants:
        target = work / f"{name}.onnx"
        try:
            if name == "fp32":
                built[name] = (source.path, {"kind": "fp32"})
                continue
            if name == "fp16" and "CUDAExecutionProvider" not in ort.get_available_providers():
                skipped[name] = "FP16 is for GPUs; no CUDA execution provider here"
                continue
            if name == "int8-static" and calibration is None:
                skipped[name] = "no calibration data (--calibration-data)"
                continue
            progress(f"building {name} ...")
            if name in ("int8-static", "int8-dynamic") and pre is None:
                pre = work / "pre.onnx"
                quantize.preprocess(source.path, pre)
            if name == "optimized":
                step = graph.ort_optimize(source.path, target)
            elif name == "simplified":
                step = graph.simplify(source.path, target)
            elif name == "int8-static":
                assert pre is not None and calibration is not None
                data = samples_for(source, calibration, calibration_samples, seed=0)
                step = quantize.static(pre, target, data, quantize.StaticOptions())
            elif name == "int8-dynamic":
                assert pre is not None
                step = quantize.dynamic(pre, target)
            elif name == "fused-int8-dynamic":
                fused = work / "fused.onnx"
                fusion = graph.fuse_transformer(source.path, fused)
                step = {**quantize.dynamic(fused, target), "fusion": fusion}
            else:
                step = graph.to_fp16(source.path, target)
            built[name] = (target, step)
        except InvalidInput as exc:  # the variant does not apply to this model: say why in the report
            skipped[name] = str(exc).splitlines()[0]
            progress(f"  skipped {name}: {skipped[name]}")
    return built, skipped


def _time_points(variants: list[Variant], evaluation: Samples, space: SearchSpace, batch_sizes: tuple[int, ...],
                 budget: float, latency_slo_ms: float | None, progress: Progress) -> list[Point]:
    points = []
    for variant in variants:
        within_budget = variant.comparison.loss <= budget
        if not within_budget:
            progress(f"{variant.name}: loss {variant.comparison.loss:.4f} over budget {budget:g}; timed anyway for "
                     f"the report")
        for threads, instances, mode in space.layouts():
            sessions = [open_session(variant.path, threads, mode) for _ in range(instances)]
            for batch_size in batch_sizes:
                timing = time_instances(sessions, batch_of(evaluation, batch_size), space.seconds_per_point)
                fits_slo = latency_slo_ms is None or timing.p50_ms <= latency_slo_ms
                points.append(Point(variant.name, threads, instances, mode, batch_size, timing.p50_ms,
                                    timing.p90_ms, timing.rows_per_second, variant.comparison.loss,
                                    within_budget and fits_slo))
                progress(f"  {variant.name} threads={threads} instances={instances} {mode} batch={batch_size}: "
                         f"p50 {timing.p50_ms:.2f} ms, {timing.rows_per_second:.1f} rows/s")
    return points


def tune(source: ModelSource, budget: float, judging: Judging, space: SearchSpace = SearchSpace(),
         latency_slo_ms: float | None = None, calibration: str | None = None, calibration_samples: int = 128,
         output: Path | None = None, progress: Progress = print) -> TuneResult:
    started = time.perf_counter()
    unknown = [name for name in space.variants if name not in ALL_VARIANTS]
    if unknown:
        raise InvalidInput(f"unknown variant {unknown[0]!r}; expected some of {', '.join(ALL_VARIANTS)}")
    for threads in space.thread_counts():
        for mode in space.execution_modes:
            session_config(threads, mode)  # refuse bad settings before building anything
    refuse_quantized(source.path, "tune the FP32 model it came from instead")
    fixed = source.signature.fixed_batch_size
    batch_sizes = (fixed,) if fixed else space.batch_sizes
    evaluation = samples_for(source, judging.data, judging.samples, seed=1)
    check = judge(source, evaluation, judging)
    with workspace(source, output) as work:
        built, skipped = _build_variants(source, work, space, calibration, calibration_samples, progress)
        variants = []
        for name, (path, step) in built.items():
            comparison = check(path)
            variants.append(Variant(name, path, step, comparison))
            progress(f"{name}: {comparison.text()}")
        points = _time_points(variants, evaluation, space, batch_sizes, budget, latency_slo_ms, progress)
        eligible = [p for p in points if p.eligible]
        if not eligible:
            raise InvalidInput(f"no variant meets the accuracy budget {budget:g}"
                               + (f" and the latency SLO {latency_slo_ms:g} ms" if latency_slo_ms else "")
                               + "; losses: " + ", ".join(f"{v.name} {v.comparison.loss:.4f}" for v in variants))
        choice = max(eligible, key=lambda p: (p.rows_per_second, -p.p50_ms))
        chosen = next(v for v in variants if v.name == choice.variant)
        published = None
        if chosen.name == "fp32" and output is None:
            progress("FP32 stays the fastest within the budget: no new version; serving settings updated")
        else:
            final = work / "chosen.onnx"
            shutil.copyfile(chosen.path, final)  # placing it moves the file, and fp32's is the source itself
            record = provenance(source, {**chosen.step, "tuned": asdict(choice),
                                         "evaluation": chosen.comparison.as_dict()}, started)
            published = write_variant(source, final, output, record)
        if source.model_dir is not None and output is None:
            update_serving_config(source.model_dir, choice)
    return TuneResult(source.name, budget, latency_slo_ms, variants, skipped, points, choice, published,
                      time.perf_counter() - started)


def update_serving_config(model_dir: Path, choice: Point) -> None:
    """Threads, instances, execution mode and largest batch of the chosen point into config.yaml; everything else
    kept."""
    current = load_config(model_dir)
    session = {**current.session.model_dump(exclude_defaults=True), "intra_op_threads": choice.threads,
               "execution_mode": choice.execution_mode}
    update_config(model_dir, {"session": session, "instances": choice.instances, "max_batch_size": choice.batch_size,
                              "preferred_batch_sizes": [size for size in current.preferred_batch_sizes
                                                        if size <= choice.batch_size]})
