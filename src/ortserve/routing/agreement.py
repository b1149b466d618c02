"""How closely a shadow version's answers follow the served ones, per output, over the rows compared."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OutputAgreement:
    """Running sums, so that Prometheus rates give the agreement over any window."""

    rows: int = 0  # rows compared
    mismatched: int = 0  # answers whose shape or type differed: not comparable
    top1_rows: int = 0  # rows of class scores ([rows, classes] floats)
    top1_agreed: int = 0  # ... whose highest class was the same
    cosine_sum: float = 0.0  # over `rows`: each row flattened, served against shadow
    max_abs_error: float = 0.0  # the largest absolute difference seen in any element

    def add(self, served: np.ndarray, shadow: np.ndarray) -> None:
        if served.shape != shadow.shape or served.dtype.kind not in "fiub" or shadow.dtype.kind not in "fiub":
            self.mismatched += 1
            return
        rows = served.shape[0] if served.ndim else 1
        a = served.reshape(rows, -1).astype(np.float64)
        b = shadow.reshape(rows, -1).astype(np.float64)
        self.rows += rows
        if served.ndim == 2 and served.shape[1] >= 2 and served.dtype.kind == "f":
            self.top1_rows += rows
            self.top1_agreed += int(np.count_nonzero(a.argmax(axis=1) == b.argmax(axis=1)))
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        dots = np.einsum("ij,ij->i", a, b)
        # two zero rows agree exactly; one zero row against another does not
        same = np.all(a == b, axis=1)
        cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))
        self.cosine_sum += float(cosine.sum())
        if a.size:
            self.max_abs_error = max(self.max_abs_error, float(np.max(np.abs(a - b))))

    def summary(self) -> dict[str, float | int | None]:
        return {
            "rows": self.rows,
            "mismatched": self.mismatched,
            "top1_agreement": self.top1_agreed / self.top1_rows if self.top1_rows else None,
            "mean_cosine": self.cosine_sum / self.rows if self.rows else None,
            "max_abs_error": self.max_abs_error if self.rows else None,
        }
