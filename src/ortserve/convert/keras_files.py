"""Keras model files (.keras, .h5), each loaded by the Keras that wrote it.

TensorFlow 2.16+ brings Keras 3, which cannot load most files Keras 2 wrote: a functional model calling a TensorFlow
op (`tf.concat`, `x * 2`) holds `TFOpLambda` layers Keras 3 lacks, and a Keras 2 `.keras` file names classes of
`tf_keras`. Keras 2 lives on as the `tf-keras` package, which loads them as they were saved.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ortserve.errors import InvalidInput

KERAS_2_PACKAGE = "tf-keras==2.21.0"  # Keras 2 for TensorFlow 2.21; pip install --no-deps (it requires full tensorflow)


@dataclass(frozen=True)
class KerasFile:
    model: Any
    saved_by: str | None  # the Keras version the file names, when it names one
    loader: str  # the package that loaded it: keras (3) or tf-keras (Keras 2)
    loader_version: str
    input_keys: list[str]  # a model of dict inputs or outputs takes and answers them by these keys, sorted
    output_keys: list[str]


def saved_by(path: Path) -> str | None:
    """The Keras version that wrote the file: an HDF5 file's `keras_version` attribute, a .keras archive's
    metadata.json."""
    try:
        if path.suffix == ".h5":
            import h5py

            with h5py.File(path, "r") as file:
                version = file.attrs.get("keras_version")
            return version.decode() if isinstance(version, bytes) else version
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # unreadable: Keras' own load names the problem
        return None


def load(path: Path, unsafe_deserialization: bool) -> KerasFile:
    """The model in `path`, loaded by tf-keras when Keras 2 wrote it and tf-keras is installed, else by Keras 3.

    `unsafe_deserialization` lets a file run the Python code it holds as it loads (a Lambda layer of a Python
    lambda), which Keras refuses by default; only for files the user trusts.
    """
    version = saved_by(path)
    by_keras_2 = version is not None and version.split(".")[0] in {"1", "2"}
    if by_keras_2:
        try:
            import tf_keras
        except ImportError:
            tf_keras = None
        if tf_keras is not None:
            model = _loaded(tf_keras, path, unsafe_deserialization)
            return KerasFile(model, version, "tf-keras", tf_keras.__version__,
                             _dict_keys(getattr(model, "_nested_inputs", None)),
                             _dict_keys(getattr(model, "_nested_outputs", None)))
    import keras

    try:
        model = _loaded(keras, path, unsafe_deserialization)
    except (TypeError, ValueError) as exc:
        if by_keras_2:
            first = str(exc).splitlines()[0]
            raise InvalidInput(
                f"{str(path)!r} was saved by Keras {version}, and Keras {keras.__version__} cannot load it ({first}): "
                f"install Keras 2 beside TensorFlow (pip install --no-deps {KERAS_2_PACKAGE}) and convert again"
            ) from None
        raise
    return KerasFile(model, version, "keras", keras.__version__,
                     _dict_keys(getattr(model, "_inputs_struct", None)),
                     _dict_keys(getattr(model, "_outputs_struct", None)))


def _loaded(package: Any, path: Path, unsafe_deserialization: bool) -> Any:
    try:
        return package.models.load_model(str(path), compile=False, safe_mode=not unsafe_deserialization)
    except ValueError as exc:
        if "safe_mode" not in str(exc):
            raise
        raise InvalidInput(
            f"{str(path)!r} holds a Lambda layer of Python code, which Keras runs from a file only when told the file "
            "is trusted: if it is, convert with --unsafe-deserialization") from None


def _dict_keys(structure: Any) -> list[str]:
    return sorted(structure) if isinstance(structure, dict) else []
