"""Accuracy-aware static quantization: when INT8 everywhere costs more than the budget, keep the spots that
hurt most in FP32, a few more at each step, until the budget is met.

Where it hurts comes from comparing the FP32 and the INT8 model layer by layer on the same samples, as the
signal-to-quantization-noise ratio (SQNR, dB) of each INT8 tensor against its FP32 value, averaged over channels
(a per-tensor INT8 scale set by one outlier channel rounds the others away, which a whole-tensor SQNR hides).
Two kinds of spots add noise: an activation's Quantize/Dequantize pair (kept in FP32 by excluding the nodes that
produce and consume the activation), and a node computing on quantized weights and inputs (from its noisiest input
to its output; kept in FP32 by excluding it). Each is scored by the noise-to-signal ratio it adds (linear, so that
rounding an exact input to 42 dB counts for little and a channel-erasing rounding to 5 dB for a lot); the largest
go first.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ortserve.optimize import quantize
from ortserve.optimize.data import Samples
from ortserve.optimize.evaluate import Comparison
from ortserve.optimize.measure import batch_of, open_session, time_runs

QUANTIZED_BY_QDQ = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "AveragePool",
                    "GlobalAveragePool", "MaxPool", "Resize", "Softmax", "Where", "Gather", "Transpose", "Reshape",
                    "Squeeze", "Unsqueeze", "Sigmoid", "LeakyRelu", "InstanceNormalization", "LayerNormalization"}
NOISE_SAMPLES = 16
CLEAN_DB = 120.0  # the SQNR of a tensor the INT8 model computes exactly (inputs, equal values)


@dataclass(frozen=True)
class Step:
    excluded: list[str]  # the nodes kept in FP32
    loss: float
    latency_ms: float  # batch 1, median
    seconds: float  # this step's quantize + evaluate + time


@dataclass(frozen=True)
class SearchResult:
    model: Path  # the chosen step's file
    record: dict[str, Any]  # what quantize.static said of it
    comparison: Comparison
    excluded: list[str]
    budget: float
    met: bool
    fp32_latency_ms: float
    steps: list[Step]
    ranking: list[Spot]  # worst first

    def as_dict(self) -> dict[str, object]:
        return {"excluded": self.excluded, "budget": self.budget, "met": self.met, "loss": self.comparison.loss,
                "fp32_latency_ms": self.fp32_latency_ms, "steps": [asdict(step) for step in self.steps],
                "ranking": [{"where": spot.where, "exclude": list(spot.nodes), "added_noise": spot.added_noise}
                            for spot in self.ranking]}

    def text(self) -> str:
        lines = [f"accuracy-aware search (budget {self.budget:g}; FP32 batch-1 latency {self.fp32_latency_ms:.2f} ms):"]
        for step in self.steps:
            lines.append(f"  {len(step.excluded):>3} nodes in FP32: loss {step.loss:.4f},"
                         f" {step.latency_ms:.2f} ms ({self.fp32_latency_ms / step.latency_ms:.2f}x FP32), "
                         f"{step.seconds:.1f} s")
        verdict = "met" if self.met else "NOT met (the lowest loss found is kept)"
        lines.append(f"  budget {verdict}; nodes kept in FP32: {self.excluded or 'none'}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Spot:
    where: str  # "activation NAME" or "node NAME"
    nodes: tuple[str, ...]  # what to exclude to keep it in FP32
    added_noise: float  # noise-to-signal power ratio after the spot minus before it


def rank_spots(fp32_path: Path, int8_path: Path, samples: Samples) -> list[Spot]:
    """Every place the INT8 model loses signal, largest SQNR drop first."""
    fp32 = onnx.load(str(fp32_path)).graph
    int8 = onnx.load(str(int8_path)).graph
    fp32_tensors = [name for node in fp32.node for name in node.output] + [i.name for i in fp32.input]
    # activation -> (its value before rounding, after rounding) in the INT8 graph
    rounding = {}
    dequantizers = {node.input[0]: node.output[0] for node in int8.node if node.op_type == "DequantizeLinear"}
    known = set(fp32_tensors)
    for node in int8.node:
        if node.op_type == "QuantizeLinear" and node.output[0] in dequantizers:
            before, after = node.input[0], dequantizers[node.output[0]]
            name = before if before in known else after
            if name in known:
                rounding[name] = (before, after)
    int8_names = {name for node in int8.node for name in node.output} | {i.name for i in int8.input}
    reference = _activations(fp32_path, fp32_tensors, samples)
    wanted = {name for pair in rounding.values() for name in pair} | (set(reference) & int8_names)
    quantized = _activations(int8_path, sorted(wanted), samples)

    def sqnr(name: str, int8_name: str) -> float | None:
        if name not in reference or int8_name not in quantized:
            return None
        return _sqnr_db(reference[name], quantized[int8_name])

    spots = []
    for name, (before, after) in rounding.items():
        clean, rounded = sqnr(name, before), sqnr(name, after)
        touching = tuple(node.name for node in fp32.node if node.op_type in QUANTIZED_BY_QDQ and node.name
                         and name in (*node.input, *node.output))
        if clean is not None and rounded is not None and touching:
            spots.append(Spot(f"activation {name}", touching, _noise(rounded) - _noise(clean)))
    for node in fp32.node:
        if node.op_type not in QUANTIZED_BY_QDQ or not node.name:
            continue
        inputs = [sqnr(name, rounding.get(name, (name, name))[1]) for name in node.input]
        outputs = [sqnr(name, rounding.get(name, (name, name))[0]) for name in node.output]
        measured_out = [value for value in outputs if value is not None]
        if measured_out:
            noisiest_input = min([value for value in inputs if value is not None], default=CLEAN_DB)
            spots.append(Spot(f"node {node.name}", (node.name,), _noise(min(measured_out)) - _noise(noisiest_input)))
    return sorted(spots, key=lambda spot: -spot.added_noise)


def _noise(sqnr_db: float) -> float:
    return float(10 ** (-sqnr_db / 10))


def _activations(model_path: Path, names: list[str], samples: Samples) -> dict[str, np.ndarray]:
    """The float values of the named tensors, made graph outputs of a scratch copy of the model."""
    model = onnx.load(str(model_path))
    existing = {output.name for output in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in dict.fromkeys(names) if name not in existing)
    with tempfile.TemporaryDirectory(prefix=".activations-", dir=model_path.parent) as scratch:
        augmented = Path(scratch) / "augmented.onnx"
        onnx.save(model, str(augmented))
        session = open_session(augmented)
        wanted = [output.name for output in session.get_outputs()
                  if output.name in set(names) and output.type == "tensor(float)"]
        values = session.run(wanted, dict(samples.feeds))
    return dict(zip(wanted, values, strict=True))


def _sqnr_db(reference: np.ndarray, noisy: np.ndarray) -> float:
    """Mean over channels (axis 1 of 4-D tensors, else the last) of each channel's SQNR; silent channels skipped."""
    if reference.shape != noisy.shape or reference.ndim == 0:
        return CLEAN_DB
    axis = 1 if reference.ndim == 4 else reference.ndim - 1
    others = tuple(i for i in range(reference.ndim) if i != axis)
    reference64 = reference.astype(np.float64)
    signal = np.sum(reference64**2, axis=others)
    noise = np.sum((reference64 - noisy) ** 2, axis=others)
    audible = signal > 0
    if not audible.any():
        return CLEAN_DB
    ratio = signal[audible] / np.maximum(noise[audible], signal[audible] * 10 ** (-CLEAN_DB / 10))
    return float(np.mean(10.0 * np.log10(ratio)))


def search(pre_processed: Path, work: Path, calibration: Samples, evaluation: Samples,
           options: quantize.StaticOptions, budget: float, judge: Callable[[Path], Comparison],
           max_steps: int = 6, progress: Callable[[str], None] = print) -> SearchResult:
    """INT8 everywhere first; then the 1, 2, 4, ... most hurtful spots kept in FP32 until the budget holds.

    Calibration runs once (its ranges are cached), so each step costs one QDQ rewrite and one evaluation.
    """
    cache = work / "calibration.json"
    feed = batch_of(evaluation, 1)
    fp32_ms = time_runs(open_session(pre_processed), feed, seconds=0.5).p50_ms
    graph = onnx.load(str(pre_processed), load_external_data=False).graph
    quantizable = {node.name for node in graph.node if node.op_type in QUANTIZED_BY_QDQ}
    steps: list[Step] = []
    best: tuple[Path, dict[str, Any], Comparison] | None = None
    ranking: list[Spot] = []
    count = 0
    for step_index in range(max_steps + 1):
        started = time.perf_counter()
        excluded = list(dict.fromkeys([*options.exclude, *(node for spot in ranking[:count] for node in spot.nodes)]))
        if step_index > 0 and (len(set(excluded) & quantizable) >= len(quantizable) or excluded == steps[-1].excluded):
            break  # at least one node stays INT8 (or this is no longer quantization), and each step adds one
        candidate = work / f"int8-step{step_index}.onnx"
        record = quantize.static(pre_processed, candidate, calibration, replace(options, exclude=tuple(excluded)),
                                 calibration_cache=cache)
        comparison = judge(candidate)
        latency = time_runs(open_session(candidate), feed, seconds=0.5).p50_ms
        steps.append(Step(excluded, comparison.loss, latency, time.perf_counter() - started))
        progress(f"  {len(excluded)} nodes in FP32: loss {comparison.loss:.4f}, {latency:.2f} ms")
        if best is None or comparison.loss < best[2].loss:
            best = (candidate, record, comparison)
        if comparison.loss <= budget:
            break
        if not ranking:
            ranking = rank_spots(pre_processed, candidate, evaluation.head(NOISE_SAMPLES))
        count = max(1, count * 2)
    assert best is not None
    model, record, comparison = best
    return SearchResult(model, record, comparison, record["exclude"], budget, comparison.loss <= budget, fp32_ms,
                        steps, ranking[:32])
