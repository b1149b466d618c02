"""scikit-learn classifiers as skl2onnx exports them by default: the class probabilities go through a ZipMap, whose
output is a sequence of maps (one {class: probability} per row), which no serving protocol carries as a tensor
(V2, TF Serving and Triton all refuse it; ONNX Runtime hands it to Python as a list of dicts). Served, the ZipMap
is left out: its output keeps its name and becomes the tensor of probabilities it was made from, [batch, classes]
with the classes in the order the log line names (skl2onnx's `zipmap=False` gives the same model).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

log = logging.getLogger(__name__)

ML_DOMAIN = "ai.onnx.ml"


def without_zipmap(path: Path) -> bytes | None:
    """The model at `path` with its ZipMap outputs served as tensors, serialized; None when it has none (or cannot
    be read: ONNX Runtime then says what is wrong with it)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _without_zipmap(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _without_zipmap(path: str, _mtime_ns: int, _size: int) -> bytes | None:
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, OSError):
        return None
    graph = model.graph
    outputs = {output.name: output for output in graph.output}
    zipmaps = [node for node in graph.node
               if node.op_type == "ZipMap" and node.domain == ML_DOMAIN and node.output[0] in outputs]
    if not zipmaps or any(_external(tensor) for tensor in graph.initializer):
        return None
    for node in zipmaps:
        name = node.output[0]
        labels = _class_labels(node)
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, helper.make_node("Identity", [node.input[0]], [name], name=f"{node.name}_tensor"))
        served = helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, len(labels) or None])
        outputs[name].CopyFrom(served)
        log.info("%s: output %r is a ZipMap (a {class: probability} map per row); served as the tensor of "
                 "probabilities it maps, [batch, %d], classes in this order: %s", path, name, len(labels),
                 labels)
    return model.SerializeToString()


def _external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def _class_labels(node: onnx.NodeProto) -> list[int | str]:
    for attribute in node.attribute:
        if attribute.name == "classlabels_int64s":
            return list(attribute.ints)
        if attribute.name == "classlabels_strings":
            return [label.decode() for label in attribute.strings]
    return []
