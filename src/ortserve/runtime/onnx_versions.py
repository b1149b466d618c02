"""Models written by an onnx package newer than the ONNX Runtime that serves them.

onnx's `helper.make_model` stamps a model with the newest IR version and opset that onnx knows (onnx 1.23: IR 14,
opset 28), and ONNX Runtime refuses a model stamped newer than it reads (1.31: IR 13, opset 26), whatever the
model uses. So a model built by hand with the current onnx does not load, though its operators are old. Such a
model is served as the older versions: its IR version lowered (the IR version adds data types, which ONNX Runtime
then checks as it loads), and its default-domain opset converted down by onnx's version converter, which adapts
each operator that changed and refuses a model using one that has no older form. What was changed is logged.

The other way round, ONNX Runtime has dropped the kernels of operators older than opset 7 (1.31: "Could not find
an implementation for Add(6)"), which models exported before 2018 use (PyTorch 0.3/0.4's, the first model zoo's).
A model whose default-domain opset is older than the oldest this ONNX Runtime runs is converted up to it by the
same converter. PRelu's slope changed at opset 7 with no adapter: before, a slope of C values applied per channel
(axis 1); from 7 it broadcasts from the last axis, so such slopes are reshaped to [C, 1, ...] here.

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
from onnx import TensorProto, helper, shape_inference, version_converter

log = logging.getLogger(__name__)

_DEFAULT_DOMAINS = ("", "ai.onnx")
_IR_LIMIT = re.compile(r"max supported IR version: (\d+)")
_OPSET_LIMIT = re.compile(r"support for domain ai\.onnx is till opset (\d+)")
_ORT_FAIL = ort.capi.onnxruntime_pybind11_state.Fail
_ORT_NOT_IMPLEMENTED = ort.capi.onnxruntime_pybind11_state.NotImplemented
_ADD_VERSIONS = (1, 6, 7)
IR_OF_OLD_MODELS = 3  # the IR version of opset 1-6's time
_PRELU_BROADCASTS = 7  # the opset from which PRelu's slope broadcasts from the last axis
_PROTOBUF_LIMIT = 2_000_000_000  # a model larger than this keeps its weights in an external data file
_copies: list[tempfile.TemporaryDirectory[str]] = []  # fitted copies, removed when the process ends


@functools.cache
def runtime_limits() -> tuple[int | None, int | None]:
    """The newest IR version and default-domain opset this ONNX Runtime reads, as its refusals of a tiny model
    stamped far newer say them; None where they do not say it."""
    return _refused_limit(1_000, 1, _IR_LIMIT), _refused_limit(3, 1_000, _OPSET_LIMIT)


@functools.cache
def oldest_runtime_opset() -> int:
    """The oldest default-domain opset whose Add this ONNX Runtime runs: a probe of the operator versions 1, 6
    and 7 (Add's first three), the first that loads."""
    for opset in _ADD_VERSIONS:
        try:
            ort.InferenceSession(_probe_model(IR_OF_OLD_MODELS, opset, "Add").SerializeToString(),
                                 _quiet_options(), providers=["CPUExecutionProvider"])
        except (_ORT_FAIL, _ORT_NOT_IMPLEMENTED):
            continue
        return opset
    return _ADD_VERSIONS[-1]


def _quiet_options() -> ort.SessionOptions:
    """Options of a probe session: ONNX Runtime's warnings about the probe's old opset (on every server's stderr,
    once a process) are about the probe, not about any model served."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return options


def _probe_model(ir_version: int, opset: int, operator: str = "Identity") -> onnx.ModelProto:
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    inputs = ["x", "x"] if operator == "Add" else ["x"]
    graph = helper.make_graph([helper.make_node(operator, inputs, ["x_out"])], "probe", [value],
                              [helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, ir_version=ir_version, opset_imports=[helper.make_opsetid("", opset)])


def _refused_limit(ir_version: int, opset: int, limit: re.Pattern[str]) -> int | None:
    try:
        ort.InferenceSession(_probe_model(ir_version, opset).SerializeToString(), _quiet_options(),
                             providers=["CPUExecutionProvider"])
    except _ORT_FAIL as exc:
        found = limit.search(str(exc))
        return int(found.group(1)) if found else None
    return None


def fit_to_runtime(model: onnx.ModelProto, label: str) -> bool:
    """Lower `model`'s IR version and default-domain opset (in place) to what this ONNX Runtime reads, where they
    are newer, or raise its opset to the oldest it runs; True when it changed. A model the version converter
    cannot convert is left as it is (ONNX Runtime's refusal then says why it does not load), with the converter's
    reason logged."""
    most_ir, most_opset = runtime_limits()
    opset = _default_opset(model)
    if opset is not None and opset < oldest_runtime_opset():
        if not _convert_opset(model, opset, oldest_runtime_opset(), label, "older than this onnxruntime runs"):
            return False
        if opset < _PRELU_BROADCASTS:
            _prelu_slopes_per_channel(model)
        return True
    changes = []
    if most_opset is not None and opset is not None and opset > most_opset:
        if not _convert_opset(model, opset, most_opset, label, "newer than this onnxruntime reads"):
            return False
        changes.append(f"opset {opset} -> {most_opset}")
    if most_ir is not None and model.ir_version > most_ir:
        changes.append(f"IR version {model.ir_version} -> {most_ir}")
        model.ir_version = most_ir
    if changes:
        log.warning("%s: written by a newer onnx than this onnxruntime reads; read as %s", label,
                    ", ".join(changes))
    return bool(changes)


def _convert_opset(model: onnx.ModelProto, opset: int, target: int, label: str, why: str) -> bool:
    """Convert `model` (in place) to default-domain opset `target` with onnx's version converter; False, logged,
    where the converter cannot."""
    try:
        converted = version_converter.convert_version(model, target)
    except (RuntimeError, version_converter.ConvertError) as exc:
        log.warning("%s: opset %d is %s (%d), and onnx's version converter cannot convert it: %s", label, opset,
                    why, target, str(exc).rsplit(": ", 1)[-1])
        return False
    model.CopyFrom(converted)
    if target < opset:
        return True  # fit_to_runtime logs it with the IR version's change
    log.warning("%s: opset %d is %s; read as opset %d", label, opset, why, target)
    return True


def _prelu_slopes_per_channel(model: onnx.ModelProto) -> None:
    """Reshape (in place) each PRelu's slope of C values, an initializer used by PRelu alone, to [C, 1, ...] for
    the rank of its input, where shape inference knows that rank."""
    graph = model.graph
    if not any(node.op_type == "PRelu" for node in graph.node):
        return
    initializers = {each.name: each for each in graph.initializer}
    users: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    ranks = {value.name: len(value.type.tensor_type.shape.dim)
             for value in (*shape_inference.infer_shapes(model).graph.value_info, *graph.input)
             if value.type.tensor_type.HasField("shape")}
    inputs = {value.name: value for value in graph.input}
    for node in graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2:
            continue
        slope = initializers.get(node.input[1])
        rank = ranks.get(node.input[0], 0)
        if slope is None or len(slope.dims) != 1 or slope.dims[0] <= 1 or rank <= 2 or users[slope.name] != {"PRelu"}:
            continue
        per_channel = [slope.dims[0]] + [1] * (rank - 2)
        slope.dims[:] = per_channel
        listed = inputs.get(slope.name)  # IR 3 lists initializers among the graph's inputs
        if listed is not None:
            listed.type.CopyFrom(helper.make_tensor_type_proto(slope.data_type, per_channel))


def runnable_file(path: Path) -> Path:
    """`path`, or a copy of it fitted to this ONNX Runtime (fit_to_runtime) where it is stamped newer than it
    reads: in a temporary directory kept until the process ends, its external data (if any) beside it."""
    most_ir, most_opset = runtime_limits()
    try:
        header = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError):  # what reads it next says what is wrong with it
        return path
    opset = _default_opset(header)
    too_new = (most_ir is not None and header.ir_version > most_ir) or (
        most_opset is not None and opset is not None and opset > most_opset)
    if not too_new and (opset is None or opset >= oldest_runtime_opset()):
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
