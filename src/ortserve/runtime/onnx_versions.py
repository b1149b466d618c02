"""Models written by an onnx package newer than the ONNX Runtime that serves them.

onnx's `helper.make_model` stamps a model with the newest IR version and opset that onnx knows (onnx 1.23: IR 14,
opset 28), and ONNX Runtime refuses a model stamped newer than it reads (1.31: IR 13, opset 26), whatever the
model uses. So a model built by hand with the current onnx does not load, though its operators are old. Such a
model is served as the older versions: its IR version lowered (the IR version adds data types, which ONNX Runtime
then checks as it loads), and its default-domain opset converted down by onnx's version converter, which adapts
each operator that changed and refuses a model using one that has no older form. What was changed is logged.
The server fits the model it loads in memory (runtime.session); the tools that take a model file (optimize,
quantize, evaluate, tune, export-tf) work on a fitted copy (runnable_file).
"""

from __future__ import annotations

import functools
import logging
import re
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, version_converter

log = logging.getLogger(__name__)

_DEFAULT_DOMAINS = ("", "ai.onnx")
_IR_LIMIT = re.compile(r"max supported IR version: (\d+)")
_OPSET_LIMIT = re.compile(r"support for domain ai\.onnx is till opset (\d+)")
_ORT_FAIL = ort.capi.onnxruntime_pybind11_state.Fail
_PROTOBUF_LIMIT = 2_000_000_000  # a model larger than this keeps its weights in an external data file
_copies: list[tempfile.TemporaryDirectory[str]] = []  # fitted copies, removed when the process ends


@functools.cache
def runtime_limits() -> tuple[int | None, int | None]:
    """The newest IR version and default-domain opset this ONNX Runtime reads, as its refusals of a tiny model
    stamped far newer say them; None where they do not say it."""
    return _refused_limit(1_000, 1, _IR_LIMIT), _refused_limit(3, 1_000, _OPSET_LIMIT)


def _refused_limit(ir_version: int, opset: int, limit: re.Pattern[str]) -> int | None:
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["x_out"])], "probe", [value],
                              [helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, ir_version=ir_version, opset_imports=[helper.make_opsetid("", opset)])
    try:
        ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except _ORT_FAIL as exc:
        found = limit.search(str(exc))
        return int(found.group(1)) if found else None
    return None


def fit_to_runtime(model: onnx.ModelProto, label: str) -> bool:
    """Lower `model`'s IR version and default-domain opset (in place) to what this ONNX Runtime reads, where they
    are newer; True when it changed. A model the version converter cannot take down is left as it is (ONNX
    Runtime's refusal then says why it does not load), with the converter's reason logged."""
    most_ir, most_opset = runtime_limits()
    opset = _default_opset(model)
    changes = []
    if most_opset is not None and opset is not None and opset > most_opset:
        try:
            converted = version_converter.convert_version(model, most_opset)
        except RuntimeError as exc:
            log.warning("%s: opset %d is newer than this onnxruntime reads (%d), and onnx's version converter "
                        "cannot take it down: %s", label, opset, most_opset, str(exc).rsplit(": ", 1)[-1])
            return False
        model.CopyFrom(converted)
        changes.append(f"opset {opset} -> {most_opset}")
    if most_ir is not None and model.ir_version > most_ir:
        changes.append(f"IR version {model.ir_version} -> {most_ir}")
        model.ir_version = most_ir
    if changes:
        log.warning("%s: written by a newer onnx than this onnxruntime reads; read as %s", label,
                    ", ".join(changes))
    return bool(changes)


def runnable_file(path: Path) -> Path:
    """`path`, or a copy of it fitted to this ONNX Runtime (fit_to_runtime) where it is stamped newer than it
    reads: in a temporary directory kept until the process ends, its external data (if any) beside it."""
    most_ir, most_opset = runtime_limits()
    try:
        header = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError):  # what reads it next says what is wrong with it
        return path
    opset = _default_opset(header) or 0
    if (most_ir is None or header.ir_version <= most_ir) and (most_opset is None or opset <= most_opset):
        return path
    model = onnx.load(str(path))
    if not fit_to_runtime(model, str(path)):
        return path
    scratch = tempfile.TemporaryDirectory(prefix="ortserve-fitted-")
    _copies.append(scratch)
    copy = Path(scratch.name) / path.name
    onnx.save(model, str(copy), save_as_external_data=model.ByteSize() > _PROTOBUF_LIMIT,
              location=f"{path.name}.data")
    return copy


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((entry.version for entry in model.opset_import if entry.domain in _DEFAULT_DOMAINS), None)
