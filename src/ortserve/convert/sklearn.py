"""scikit-learn to ONNX with skl2onnx: an estimator or pipeline from a pickle or joblib file.

Most are converted with one FP32 input of all the features. An estimator fitted on a DataFrame whose columns a
ColumnTransformer selects by name (numbers scaled, categories one-hot encoded: the usual tabular pipeline) has no
such matrix: it is converted with one input per column, named by the column, of shape [batch, 1]; a column an
encoder of text categories reads is a string input, the others FP32. Parity feeds it a DataFrame of the same
columns (values drawn from each encoder's categories for the text ones).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
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


def _votes_unflattened(estimator: Any) -> Any:
    """The estimator, or a copy whose VotingClassifiers have flatten_transform off: skl2onnx refuses the default
    (True), which only shapes `transform`'s answer, never the labels and probabilities converted."""
    import copy

    from sklearn.ensemble import VotingClassifier

    def voters(root: Any) -> list[Any]:
        parts = [root, *(root.get_params(deep=True).values() if hasattr(root, "get_params") else ())]
        return [part for part in parts if isinstance(part, VotingClassifier) and part.flatten_transform]

    if not voters(estimator):
        return estimator
    unflattened = copy.deepcopy(estimator)
    for voter in voters(unflattened):
        voter.flatten_transform = False
    return unflattened


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
            column_inputs: list[InputSpec] | None = None) -> list[tuple[int | None, ...]]:
    """Write the ONNX model; returns its outputs' shapes (None where dynamic), which run() answers in."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [(input_name, FloatTensorType([None, n_features]))] if column_inputs is None else [
        (spec.name, StringTensorType([None, 1]) if spec.dtype == object else FloatTensorType([None, 1]))
        for spec in column_inputs]
    if column_inputs is not None:
        estimator = _text_imputers_marked(estimator)
    estimator = _votes_unflattened(estimator)
    try:
        with _bools_as_ints():
            model = _to_onnx(estimator, types, opset)
    except Exception as exc:
        raise InvalidInput(f"skl2onnx cannot convert {type(estimator).__name__}: {_first_line(exc)}") from None
    model.ir_version = min(model.ir_version, 10)
    path.write_bytes(model.SerializeToString())
    return [tuple(d.dim_value if d.HasField("dim_value") else None for d in output.type.tensor_type.shape.dim)
            for output in model.graph.output]


def _to_onnx(estimator: Any, types: list[tuple[str, Any]], opset: int) -> Any:
    """Classifiers answer a tensor of scores, not ZipMap's list of dicts (which no tensor protocol can carry); a
    converter that has no ZipMap to turn off (LinearSVC's) refuses the option, and runs without it."""
    from skl2onnx import to_onnx

    target_opset = {"": opset, "ai.onnx.ml": 3}
    if not hasattr(estimator, "classes_"):
        return to_onnx(estimator, initial_types=types, target_opset=target_opset)
    try:
        return to_onnx(estimator, initial_types=types, target_opset=target_opset, options={"zipmap": False})
    except NameError as exc:
        if "zipmap" not in str(exc):
            raise
        return to_onnx(estimator, initial_types=types, target_opset=target_opset)


@contextlib.contextmanager
def _bools_as_ints() -> Iterator[None]:
    """skl2onnx 1.20 gives some integer attributes as Python booleans (HistGradientBoosting's trees, whether a
    missing value goes left), which protobuf 7 refuses in an integer list: they are written as the 0 and 1 they
    mean while the converter runs."""
    from onnx import helper

    make_attribute = helper.make_attribute

    def with_ints(key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, list | tuple) and any(isinstance(item, bool | np.bool_) for item in value):
            value = [int(item) for item in value]
        return make_attribute(key, value, *args, **kwargs)

    helper.make_attribute = with_ints
    try:
        yield
    finally:
        helper.make_attribute = make_attribute


def _first_line(exc: Exception) -> str:
    """The converter's message up to its first line: some go on with every attribute of the node they failed."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def run(estimator: Any, features_matrix: Any, shapes: list[tuple[int | None, ...]]) -> list[np.ndarray]:
    """The outputs skl2onnx produces, in its order and shapes (`shapes`, from convert()): labels, then the scores
    (probabilities, else the decision function, else a clusterer's distances to each centre)."""
    from sklearn.base import is_clusterer
    from sklearn.svm import SVC, NuSVC

    final = getattr(estimator, "steps", [[None, estimator]])[-1][1]
    centres = getattr(final, "cluster_centers_", None)
    if centres is not None and isinstance(features_matrix, np.ndarray):
        # KMeans (scikit-learn 1.9) refuses data of another float type than its centres' (a Cython buffer error)
        features_matrix = features_matrix.astype(centres.dtype)
    answers = [np.asarray(estimator.predict(features_matrix))]
    methods = ["predict_proba", "decision_function"] + (["transform"] if is_clusterer(estimator) else [])
    scored = next((method for method in methods if hasattr(estimator, method)), None)
    if scored is not None:
        answers.append(np.asarray(getattr(estimator, scored)(features_matrix)))
    if len(answers) != len(shapes):  # the parity check names the mismatch
        return answers
    # a binary decision function d is answered as two columns: [-d, d], but libsvm's (SVC, NuSVC) as [d, -d]
    libsvm = isinstance(final, SVC | NuSVC)
    return [_in_shape(answer, shape, len(features_matrix), libsvm)
            for answer, shape in zip(answers, shapes, strict=True)]


def _in_shape(answer: np.ndarray, shape: tuple[int | None, ...], rows: int, libsvm: bool) -> np.ndarray:
    if len(shape) == 1:
        return answer.reshape(rows)
    if answer.ndim == 1 and shape[1:] == (2,) and answer.dtype.kind == "f":
        return np.stack([answer, -answer] if libsvm else [-answer, answer], axis=1)
    return answer.reshape(rows, -1)


def run_columns(estimator: Any, specs: list[InputSpec], feeds: list[np.ndarray],
                shapes: list[tuple[int | None, ...]]) -> list[np.ndarray]:
    """run() on a DataFrame of the column inputs' values."""
    import pandas as pd

    frame = pd.DataFrame({spec.name: feed[:, 0] for spec, feed in zip(specs, feeds, strict=True)})
    return run(estimator, frame, shapes)
