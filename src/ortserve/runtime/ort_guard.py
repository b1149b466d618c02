"""ONNX Runtime graph rewrites that would change a model's results, found in the model and turned off for it.

ONNX Runtime's `Pad_Fusion` folds a Pad into the Conv or pool after it. For a MaxPool that is wrong unless the
Pad's value is -inf: MaxPool's own padding never wins the max, a zero Pad's does wherever a window's values are
all negative (Keras' ResNetV2 pads its first convolution's output with zeros before MaxPool, and served 0.3 off
in its logits with the fusion on). Models without that pattern keep every rewrite.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

log = logging.getLogger(__name__)

PAD_FUSION = "Pad_Fusion"


def unsafe_optimizers(path: Path) -> list[str]:
    """The ONNX Runtime optimizers to turn off for the model at `path` (by name, as `disabled_optimizers` takes
    them); [] for most models, and for a file that cannot be read as a model: ONNX Runtime then says what is
    wrong with it, as it would have without this look."""
    try:
        stat = path.stat()
    except OSError:
        return []
    return list(_unsafe_optimizers(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _unsafe_optimizers(path: str, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    try:
        graph = onnx.load(path, load_external_data=False).graph
    except (DecodeError, OSError):
        return ()
    return unsafe_for(graph, path)


def unsafe_for(graph: onnx.GraphProto, label: str) -> tuple[str, ...]:
    """unsafe_optimizers() of a graph already read (`label`: the file, for the log)."""
    if _zero_pad_before_max_pool(graph):
        log.info("%s: a zero Pad feeds a MaxPool; ONNX Runtime's %s would pad it with -inf instead, so it is off "
                 "for this model", label, PAD_FUSION)
        return (PAD_FUSION,)
    return ()


def _zero_pad_before_max_pool(graph: onnx.GraphProto) -> bool:
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type != "Pad" or node.domain not in ("", "ai.onnx"):
            continue
        if any(after.op_type == "MaxPool" for after in consumers[node.output[0]]) and not _pads_with_minus_infinity(
                node, constants):
            return True
    return False


def _pads_with_minus_infinity(pad: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    attributes = {attribute.name: attribute for attribute in pad.attribute}
    if "value" in attributes:  # opset < 11
        return attributes["value"].f == -math.inf
    if len(pad.input) < 3 or not pad.input[2]:
        return False  # the default value, 0
    value = constants.get(pad.input[2])
    if value is None:
        return False  # computed at run time: not worth guessing whether the rule folds it; it goes off
    array = numpy_helper.to_array(value)
    return bool(array.size == 1 and np.isneginf(array).all())
