"""scikit-learn to ONNX with skl2onnx: an estimator or pipeline from a pickle or joblib file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ortserve.errors import InvalidInput


def load_estimator(path: Path) -> Any:
    import joblib
    from sklearn.base import BaseEstimator

    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise InvalidInput(f"{str(path)!r} is not a pickled or joblib scikit-learn model: {exc}") from None
    if not isinstance(estimator, BaseEstimator):
        raise InvalidInput(f"{str(path)!r} holds a {type(estimator).__name__}, not a scikit-learn estimator")
    return estimator


def features(estimator: Any) -> int:
    count = getattr(estimator, "n_features_in_", None)
    if count is None:
        raise InvalidInput("the estimator is not fitted (it has no n_features_in_); declare --input")
    return int(count)


def convert(estimator: Any, input_name: str, n_features: int, opset: int, path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    try:
        model = to_onnx(estimator, initial_types=[(input_name, FloatTensorType([None, n_features]))],
                        target_opset={"": opset, "ai.onnx.ml": 3},
                        options={"zipmap": False} if hasattr(estimator, "predict_proba") else None)
    except Exception as exc:
        raise InvalidInput(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from None
    model.ir_version = min(model.ir_version, 10)
    path.write_bytes(model.SerializeToString())


def run(estimator: Any, features_matrix: np.ndarray) -> list[np.ndarray]:
    """The outputs skl2onnx produces, in its order: labels, then probabilities for classifiers."""
    if hasattr(estimator, "predict_proba"):
        return [estimator.predict(features_matrix), estimator.predict_proba(features_matrix)]
    return [np.asarray(estimator.predict(features_matrix)).reshape(len(features_matrix), -1)]
