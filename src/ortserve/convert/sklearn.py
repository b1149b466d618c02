"""scikit-learn to ONNX with skl2onnx: an estimator or pipeline from a pickle or joblib file.

Most are converted with one FP32 input of all the features. An estimator fitted on a DataFrame whose columns a
ColumnTransformer selects by name (numbers scaled, categories one-hot encoded: the usual tabular pipeline) has no
such matrix: it is converted with one input per column, named by the column, of shape [batch, 1]; a column an
encoder of text categories reads is a string input, the others FP32. Parity feeds it a DataFrame of the same
columns (values drawn from each encoder's categories for the text ones).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.convert.spec import InputSpec
from ortserve.errors import InvalidInput

log = logging.getLogger(__name__)


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


def columns(estimator: Any) -> list[InputSpec] | None:
    """One input per column for an estimator whose ColumnTransformer selects DataFrame columns by name (see the
    module's note); None for any other."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None or not hasattr(_column_transformer(estimator), "transformers_"):
        return None
    text = _text_categories(estimator)
    return [InputSpec(str(name), np.dtype(object) if name in text else np.dtype(np.float32), ("batch", 1))
            for name in names]


def column_samples(estimator: Any, specs: list[InputSpec], low: float, high: float
                   ) -> Callable[[int, np.random.Generator], list[np.ndarray]]:
    """Parity rows for column inputs: numbers in [low, high), text from the categories its encoder knows."""
    text = _text_categories(estimator)

    def sample(count: int, rng: np.random.Generator) -> list[np.ndarray]:
        feeds = []
        for spec in specs:
            if spec.dtype == object:
                values = text.get(spec.name) or ["a"]
                feeds.append(np.array([[values[index]] for index in rng.integers(0, len(values), count)],
                                      dtype=object))
            else:
                feeds.append(rng.uniform(low, high, (count, 1)).astype(np.float32))
        return feeds

    return sample


def _text_imputers_marked(estimator: Any) -> Any:
    """A copy of the estimator whose SimpleImputers of text columns take "" as the missing value: fitted with NaN
    (scikit-learn's default), which a string tensor cannot hold and skl2onnx refuses for text."""
    import copy
    import math

    marked = copy.deepcopy(estimator)
    for _, part, _ in _column_transformer(marked).transformers_:
        for step in _steps(part):
            statistics = getattr(step, "statistics_", None)
            missing = getattr(step, "missing_values", None)
            if statistics is not None and np.asarray(statistics).dtype.kind == "O" and isinstance(missing, float) \
                    and math.isnan(missing):
                step.missing_values = ""
                log.info("a SimpleImputer of text columns fills \"\" (missing text) in the ONNX model, where it "
                         "was fitted to fill NaN")
    return marked


def _column_transformer(estimator: Any) -> Any:
    return estimator.steps[0][1] if hasattr(estimator, "steps") else estimator


def _steps(part: Any) -> list[Any]:
    """The transformers of a ColumnTransformer's part: itself, a pipeline's steps, none for "drop" and
    "passthrough"."""
    if isinstance(part, str):
        return []
    return [step for _, step in part.steps] if hasattr(part, "steps") else [part]


def _text_categories(estimator: Any) -> dict[str, list[str]]:
    """The columns an encoder of text categories reads (OneHotEncoder, OrdinalEncoder, alone or in a pipeline of
    the ColumnTransformer), with those categories."""
    found: dict[str, list[str]] = {}
    for _, part, selected in _column_transformer(estimator).transformers_:
        for step in _steps(part):
            for name, values in zip(_selected_names(selected, estimator.feature_names_in_),
                                    getattr(step, "categories_", ()), strict=False):
                if np.asarray(values).dtype.kind in "OUS":
                    found[name] = [value for value in values if isinstance(value, str)]
    return found


def _selected_names(selected: Any, names: np.ndarray) -> list[str]:
    """The column names a ColumnTransformer part selects: by name, or by position or mask."""
    if isinstance(selected, str):
        return [selected]
    listed = list(selected) if not isinstance(selected, slice) else None
    if listed is not None and all(isinstance(item, str) for item in listed):
        return listed
    return [str(name) for name in np.atleast_1d(np.asarray(names)[selected])]


def convert(estimator: Any, input_name: str, n_features: int, opset: int, path: Path,
            column_inputs: list[InputSpec] | None = None) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [(input_name, FloatTensorType([None, n_features]))] if column_inputs is None else [
        (spec.name, StringTensorType([None, 1]) if spec.dtype == object else FloatTensorType([None, 1]))
        for spec in column_inputs]
    if column_inputs is not None:
        estimator = _text_imputers_marked(estimator)
    try:
        model = to_onnx(estimator, initial_types=types,
                        target_opset={"": opset, "ai.onnx.ml": 3},
                        options={"zipmap": False} if hasattr(estimator, "predict_proba") else None)
    except Exception as exc:
        raise InvalidInput(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from None
    model.ir_version = min(model.ir_version, 10)
    path.write_bytes(model.SerializeToString())


def run(estimator: Any, features_matrix: Any) -> list[np.ndarray]:
    """The outputs skl2onnx produces, in its order: labels, then probabilities for classifiers."""
    if hasattr(estimator, "predict_proba"):
        return [estimator.predict(features_matrix), estimator.predict_proba(features_matrix)]
    return [np.asarray(estimator.predict(features_matrix)).reshape(len(features_matrix), -1)]


def run_columns(estimator: Any, specs: list[InputSpec], feeds: list[np.ndarray]) -> list[np.ndarray]:
    """run() on a DataFrame of the column inputs' values."""
    import pandas as pd

    frame = pd.DataFrame({spec.name: feed[:, 0] for spec, feed in zip(specs, feeds, strict=True)})
    return run(estimator, frame)
