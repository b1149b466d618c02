"""Numerical parity between the source framework's outputs and ONNX Runtime's, output by output."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ortserve.errors import InvalidInput


@dataclass(frozen=True)
class OutputParity:
    name: str
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float | None  # for 2-D float outputs (class scores): share of rows with the same argmax
    passed: bool
    mismatch: str | None = None  # why the values could not be compared at all (shapes that differ)


@dataclass(frozen=True)
class ParityReport:
    samples: int
    atol: float
    rtol: float
    outputs: list[OutputParity]

    @property
    def passed(self) -> bool:
        return all(output.passed for output in self.outputs)

    def as_dict(self) -> dict[str, object]:
        return {"samples": self.samples, "atol": self.atol, "rtol": self.rtol, "passed": self.passed,
                "outputs": [asdict(output) for output in self.outputs]}

    def text(self) -> str:
        lines = [f"parity on {self.samples} samples (atol {self.atol:g}, rtol {self.rtol:g}):"]
        for o in self.outputs:
            top1 = f", top-1 agreement {o.top1_agreement:.1%}" if o.top1_agreement is not None else ""
            if o.mismatch is not None:
                lines.append(f"  {o.name}: {o.mismatch} -> FAILED")
                continue
            lines.append(f"  {o.name}: max abs error {o.max_abs_error:.3g}, max rel error {o.max_rel_error:.3g}"
                         f"{top1} -> {'ok' if o.passed else 'FAILED'}")
        return "\n".join(lines)


def compare(names: list[str], expected: list[np.ndarray], actual: list[np.ndarray], atol: float, rtol: float,
            samples: int) -> ParityReport:
    if not len(names) == len(expected) == len(actual):
        raise InvalidInput(f"the source model answered {len(expected)} outputs and the ONNX model "
                           f"{len(actual)} ({', '.join(names)}): they cannot be compared; nothing was written")
    outputs = []
    for name, want, got in zip(names, expected, actual, strict=True):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            outputs.append(OutputParity(name, float("inf"), float("inf"), None, False,
                                        f"shape {list(got.shape)}, where the source answers {list(want.shape)}"))
            continue
        if want.dtype.kind not in "fc":
            equal = bool(np.array_equal(_text(want), _text(got)))
            outputs.append(OutputParity(name, 0.0 if equal else float("inf"), 0.0 if equal else float("inf"), None,
                                        equal))
            continue
        difference = np.abs(want.astype(np.float64) - got.astype(np.float64))
        max_abs = float(difference.max()) if difference.size else 0.0
        max_rel = float((difference / np.maximum(np.abs(want), 1e-12)).max()) if difference.size else 0.0
        top1 = None
        if want.ndim == 2 and want.shape[1] > 1:
            top1 = float(np.mean(want.argmax(1) == got.argmax(1)))
        passed = bool(np.allclose(got, want, atol=atol, rtol=rtol))
        outputs.append(OutputParity(name, max_abs, max_rel, top1, passed))
    return ParityReport(samples, atol, rtol, outputs)


def _text(values: np.ndarray) -> np.ndarray:
    """Strings as str, whether a framework answered them as bytes (TensorFlow) or str (ONNX Runtime)."""
    if values.dtype.kind not in "OS":
        return values
    return np.array([value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                     for value in values.reshape(-1)], dtype=object).reshape(values.shape)


def nudged(feeds: list[np.ndarray], seed: int = 1) -> list[np.ndarray] | None:
    """The float feeds moved by a few units in the last place, as a different order of summation moves them (the
    others unchanged); None when no feed is a float array (token ids cannot be nudged)."""
    rng = np.random.default_rng(seed)
    moved = []
    for feed in feeds:
        if feed.dtype.kind != "f":
            moved.append(feed)
            continue
        step = 4 * np.finfo(feed.dtype).eps
        moved.append((feed * (1 + rng.uniform(-step, step, feed.shape))).astype(feed.dtype))
    return moved if any(feed.dtype.kind == "f" for feed in feeds) else None


def instability(framework: str, against_export: ParityReport, against_itself: ParityReport) -> str:
    """Why a failed parity may say nothing of the export: the source model disagrees with itself, beyond the
    tolerance, on inputs moved by rounding alone. Empty when it does not."""
    unstable = [(export, itself) for export, itself in zip(against_export.outputs, against_itself.outputs, strict=True)
                if not export.passed and not itself.passed]
    if not unstable:
        return ""
    moved = ", ".join(f"{itself.name} by up to {itself.max_abs_error:.3g} (the export: {export.max_abs_error:.3g})"
                      for export, itself in unstable)
    return (f"\nthe {framework} model is itself unstable on these samples: inputs moved by float rounding alone "
            f"move {moved}, so rounding decides its outputs and no export can match them; untrained weights do "
            "this (BatchNormalization statistics never set, weights at their initial scale). Convert the trained "
            "model, or give --samples-file with inputs it is stable on")
