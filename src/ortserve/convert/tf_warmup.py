"""A SavedModel's TF Serving warmup requests (`assets.extra/tf_serving_warmup_requests`, a TFRecord file of
PredictionLogs) as the converted model's warmup samples (`warmup.npz`: runtime.samples), so the ONNX model is
warmed up and measured on the inputs its team chose for TF Serving."""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from ortserve.convert.spec import InputSpec
from ortserve.errors import InvalidInput
from ortserve.protos.tensorflow_serving.apis.input_pb2 import Input
from ortserve.protos.tensorflow_serving.apis.prediction_log_pb2 import PredictionLog
from ortserve.runtime.samples import SAMPLES_FILE
from ortserve.server.tensor_proto import to_numpy
from ortserve.server.tf_examples import example_features

log = logging.getLogger(__name__)
WARMUP_REQUESTS = Path("assets.extra") / "tf_serving_warmup_requests"
MOST_ROWS = 256  # of a batched model's samples: enough to fill its largest batches in turn
_LENGTH = struct.Struct("<Q")  # a record: length, its CRC, the data, the data's CRC (CRCs of 4 bytes)


@dataclass(frozen=True)
class StringInput:
    """The signature's string input of a model converted from behind it (parsed tf.Examples, decoded images)."""

    name: str
    read: Callable[[np.ndarray], dict[str, np.ndarray]]  # its values (a 1-D array of bytes) as the model's inputs
    examples: bool  # its values are serialized tf.Examples: a Classify or Regress log's examples serialized


def records(path: Path) -> list[bytes]:
    """The records of a TFRecord file (uncompressed, as TF Serving reads its warmup file); checksums are not
    verified, lengths are."""
    data = path.read_bytes()
    found, offset = [], 0
    while offset < len(data):
        if offset + _LENGTH.size + 4 > len(data):
            raise InvalidInput(f"{path}: truncated TFRecord header at byte {offset}")
        (length,) = _LENGTH.unpack_from(data, offset)
        start = offset + _LENGTH.size + 4
        if start + length + 4 > len(data):
            raise InvalidInput(f"{path}: a TFRecord of {length} bytes at byte {offset} runs past the end of the file")
        found.append(data[start:start + length])
        offset = start + length + 4
    return found


def warmup_samples(saved_model: Path, inputs: list[InputSpec], folder: Path,
                   string_input: StringInput | None = None) -> Path | None:
    """Write the SavedModel's Predict warmup requests, joined along the batch dimension, as SAMPLES_FILE in
    `folder`; None when it has none that name exactly the model's inputs. `string_input`: for a model converted
    from behind its signature's string input, whose warmup requests send that input."""
    path = saved_model / WARMUP_REQUESTS
    if not path.is_file():
        return None
    names = {spec.name for spec in inputs} if string_input is None else {string_input.name}
    requests: list[dict[str, np.ndarray]] = []
    skipped = 0
    for record in records(path):
        try:
            logged = PredictionLog.FromString(record)
        except DecodeError as exc:
            raise InvalidInput(f"{path}: a record is not a PredictionLog: {exc}") from None
        kind = logged.WhichOneof("log_type")
        if kind in ("classify_log", "regress_log"):
            found = _example_request(getattr(logged, kind).request.input, inputs, string_input)
            if found is None:
                skipped += 1
            else:
                requests.append(found)
            continue
        request = logged.predict_log.request
        if kind != "predict_log" or set(request.inputs) != names:
            skipped += 1  # MultiInference logs, or another signature's Predict
            continue
        if string_input is not None:
            ((name, tensor),) = request.inputs.items()
            requests.append(string_input.read(to_numpy(name, tensor, keep_bytes=True)))
            continue
        requests.append({name: to_numpy(name, tensor) for name, tensor in request.inputs.items()})
    if skipped:
        log.info("%s: %d warmup records skipped (not Predict requests naming the inputs %s, nor Classify or "
                 "Regress requests of examples with those features)", path, skipped, sorted(names))
    if not requests:
        return None
    samples = _joined(requests, inputs)
    written = folder / SAMPLES_FILE
    # text as fixed-width bytes: an .npz of Python objects would need pickle to be read
    np.savez(written, **{name: array.astype(np.bytes_) if array.dtype == object else array
                         for name, array in samples.items()})
    log.info("the SavedModel's %d warmup requests become %s (%s)", len(requests), SAMPLES_FILE,
             ", ".join(f"{name} {list(array.shape)}" for name, array in samples.items()))
    return written


def _example_request(given: Input, inputs: list[InputSpec], string_input: StringInput | None
                     ) -> dict[str, np.ndarray] | None:
    """A Classify or Regress log's examples as the model's inputs: each input the feature of its name, one row an
    example (context features shared), as the server reads them (server.tf_examples); through the signature's
    parser for a parsing model. None when they do not fit the inputs."""
    if string_input is not None and not string_input.examples:
        return None
    kind = given.WhichOneof("kind")
    listed = given.example_list.examples if kind == "example_list" else given.example_list_with_context.examples
    context = example_features(given.example_list_with_context.context) if kind == "example_list_with_context" \
        else {}
    if not listed:
        return None
    if string_input is not None:
        if context:
            return None
        return string_input.read(np.array([example.SerializeToString() for example in listed], dtype=object))
    rows = [{**context, **example_features(example)} for example in listed]
    found = {}
    for spec in inputs:
        if not (spec.dims and spec.dims[0] == "batch" and all(isinstance(dim, int) for dim in spec.dims[1:])):
            return None  # a row per example needs a batch axis and a fixed row shape
        shape = tuple(int(dim) for dim in spec.dims[1:])
        values = [row.get(spec.name) for row in rows]
        if any(value is None or value.size != math.prod(shape) for value in values):
            return None
        stacked = np.stack([value.reshape(shape) for value in values])
        if (stacked.dtype == object) != (spec.dtype == object):
            return None
        found[spec.name] = stacked if spec.dtype == object else stacked.astype(spec.dtype)
    return found


def _joined(requests: list[dict[str, np.ndarray]], inputs: list[InputSpec]) -> dict[str, np.ndarray]:
    """The requests' rows one after another (those shaped as the first past the batch dimension), up to
    MOST_ROWS; an unbatched model's first request."""
    first = requests[0]
    if not all(spec.dims and spec.dims[0] == "batch" for spec in inputs):
        return first
    alike = [request for request in requests
             if all(request[name].shape[1:] == first[name].shape[1:] for name in first)]
    return {name: np.concatenate([request[name] for request in alike])[:MOST_ROWS] for name in first}
