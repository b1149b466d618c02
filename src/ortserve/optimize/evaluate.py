"""How far a variant's outputs are from its FP32 reference's on the same samples, and one loss to budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort

from ortserve.dtypes import from_onnx
from ortserve.errors import InvalidInput
from ortserve.optimize.data import Samples
from ortserve.runtime.signature import read_signature

TASKS = ("auto", "classification", "embedding", "regression")
EVALUATION_BATCH = 16


@dataclass(frozen=True)
class Comparison:
    task: str
    output: str
    samples: int
    batch_size: int  # samples run together (dynamic quantization's ranges depend on the batch)
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float | None = None
    top5_overlap: float | None = None  # mean share of the reference's 5 best classes among the variant's 5 best
    reference_accuracy: float | None = None  # against true labels, when given
    variant_accuracy: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    relative_l1_error: float | None = None

    @property
    def loss(self) -> float:
        """What an accuracy budget limits: top-1 disagreement, 1 - mean cosine, or relative L1 error."""
        if self.task == "classification":
            assert self.top1_agreement is not None
            return 1.0 - self.top1_agreement
        if self.task == "embedding":
            assert self.cosine_mean is not None
            return 1.0 - self.cosine_mean
        assert self.relative_l1_error is not None
        return self.relative_l1_error

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "loss": self.loss}

    def text(self) -> str:
        parts = [f"{self.task} on {self.samples} samples, output {self.output!r}: loss {self.loss:.4f}"]
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {self.top1_agreement:.2%}, top-5 overlap {self.top5_overlap:.2%}")
        if self.variant_accuracy is not None:
            parts.append(f"accuracy {self.variant_accuracy:.2%} (reference {self.reference_accuracy:.2%})")
        if self.cosine_mean is not None:
            parts.append(f"cosine mean {self.cosine_mean:.5f}, min {self.cosine_min:.5f}")
        if self.relative_l1_error is not None:
            parts.append(f"relative L1 error {self.relative_l1_error:.4g}")
        parts.append(f"max abs error {self.max_abs_error:.4g}, max rel error {self.max_rel_error:.4g}")
        return "; ".join(parts)


def run_all(session: ort.InferenceSession, samples: Samples, output: str, batch_size: int) -> np.ndarray:
    """The output for every sample, run in batches of `batch_size`, inputs cast to the session's types (an FP16
    variant with FP16 inputs is judged on the same samples)."""
    types = {node.name: from_onnx(node.type).numpy for node in session.get_inputs()}
    try:
        parts = [session.run([output], {name: values.astype(types[name], copy=False)
                                        for name, values in batch.items()})[0]
                 for batch in samples.batches(batch_size)]
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument) as exc:
        raise InvalidInput(f"the model cannot run on the samples ({samples.origin}): {exc}") from None
    return np.concatenate(parts)


def choose_task(task: str, reference: np.ndarray, is_image_classifier: bool) -> str:
    if task != "auto":
        if task not in TASKS:
            raise InvalidInput(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        return task
    if is_image_classifier:
        return "classification"
    return "embedding" if reference.dtype.kind == "f" and reference.ndim >= 2 and reference.shape[-1] > 1 \
        else "regression"


def compare(reference_session: ort.InferenceSession, variant_session: ort.InferenceSession, samples: Samples,
            output: str | None = None, task: str = "auto", is_image_classifier: bool = False) -> Comparison:
    signature = read_signature(reference_session)
    name = output or signature.outputs[0].name
    if signature.output(name) is None:
        raise InvalidInput(f"the model has no output {name!r}; it has {[s.name for s in signature.outputs]}")
    batch_size = signature.fixed_batch_size or EVALUATION_BATCH
    reference = run_all(reference_session, samples, name, batch_size).astype(np.float64)
    variant = run_all(variant_session, samples, name, batch_size).astype(np.float64)
    task = choose_task(task, reference, is_image_classifier)
    difference = np.abs(reference - variant)
    common = {"task": task, "output": name, "samples": len(samples), "batch_size": batch_size,
              "max_abs_error": float(difference.max()),
              "max_rel_error": float((difference / np.maximum(np.abs(reference), 1e-6)).max())}
    if task == "classification":
        if reference.ndim != 2 or reference.shape[1] < 2:
            raise InvalidInput(f"output {name!r} of shape {list(reference.shape)} holds no class scores")
        return Comparison(**common, **_classification(reference, variant, samples.labels))
    if task == "embedding":
        flat_reference = reference.reshape(-1, reference.shape[-1])
        flat_variant = variant.reshape(-1, variant.shape[-1])
        norms = np.linalg.norm(flat_reference, axis=1) * np.linalg.norm(flat_variant, axis=1)
        cosine = np.sum(flat_reference * flat_variant, axis=1) / np.maximum(norms, 1e-12)
        return Comparison(**common, cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()))
    return Comparison(**common, relative_l1_error=float(difference.mean() / max(np.abs(reference).mean(), 1e-12)))


def _classification(reference: np.ndarray, variant: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    k = min(5, reference.shape[1])
    best_reference = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    best_variant = np.argsort(-variant, axis=1, kind="stable")[:, :k]
    # membership of each reference class among the variant's k best, as one broadcast comparison
    overlap = (best_reference[:, :, None] == best_variant[:, None, :]).any(axis=2).mean()
    figures = {"top1_agreement": float(np.mean(best_reference[:, 0] == best_variant[:, 0])),
               "top5_overlap": float(overlap)}
    if labels is not None:
        figures["reference_accuracy"] = float(np.mean(best_reference[:, 0] == labels))
        figures["variant_accuracy"] = float(np.mean(best_variant[:, 0] == labels))
    return figures
