"""A model's own sample inputs for warmup, in place of zeros: a `.npz` of arrays named after its inputs (Triton's
model_warmup `input_data_file`, TF Serving's warmup requests).

Real inputs run where zeros do not (a shape input, a divisor, a range's step) and cost what real requests cost (a
detector's boxes, a text model's lengths), so warmup's batch costs, the batch limit and the thread choice are
measured on them. Batched models' samples are rows, repeated in turn to fill any batch size."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ortserve.errors import ConfigError, InvalidInput
from ortserve.runtime.signature import Signature
from ortserve.runtime.validate import check_inputs

Tensors = dict[str, np.ndarray]
SAMPLES_FILE = "warmup.npz"  # looked for when config.yaml names no file
_NO_LIMIT = 1 << 62


def samples_path(model: str, version_dir: Path, configured: str | None) -> Path | None:
    """config.yaml's `warmup.data`, else SAMPLES_FILE: in the version directory, else the model directory; None
    when no file is configured and none is there."""
    name = configured or SAMPLES_FILE
    for folder in (version_dir, version_dir.parent):
        if (folder / name).is_file():
            return folder / name
    if configured is not None:
        raise ConfigError(f"model {model!r}: warmup.data: no file {configured!r} in {version_dir} or "
                          f"{version_dir.parent}")
    return None


def read_samples(model: str, path: Path, signature: Signature, batched: bool) -> Tensors:
    """The file's arrays as the model's inputs: numbers cast to the input's type where that keeps their kind
    (float64 to float32), text to strings; refused by name when they do not fit the signature."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # not an .npz, or arrays of Python objects
        raise ConfigError(f"model {model!r}: warmup data {path}: {exc}") from None
    samples = {}
    for name, array in arrays.items():
        spec = signature.input(name)
        if spec is None or array.dtype.kind not in "biufSU":
            samples[name] = array  # check_inputs names the unknown input or the type
        elif spec.type.is_bytes:
            samples[name] = array.astype(object)
        elif array.dtype.kind in "SU" or not np.can_cast(array.dtype, spec.type.numpy, "same_kind"):
            samples[name] = array  # refused below by its type: text, or fractions for integers
        else:
            samples[name] = array.astype(spec.type.numpy, copy=False)
    try:
        check_inputs(signature, samples, _NO_LIMIT if batched else 0)
    except InvalidInput as exc:
        raise ConfigError(f"model {model!r}: warmup data {path}: {exc}") from None
    return samples


def sample_batch(samples: Tensors, rows: int, batched: bool) -> Tensors:
    """`rows` rows of a batched model's samples, taken in turn (the whole samples for an unbatched model)."""
    if not batched or not samples:
        return samples
    count = next(iter(samples.values())).shape[0]
    if count == rows:
        return samples
    order = np.arange(rows) % count
    return {name: array[order] for name, array in samples.items()}
