"""Integer inputs a frozen TensorFlow graph uses as row numbers of a constant table (an embedding's ids).

Parity samples for such an input must be ids the table has: TensorFlow's gather refuses an id out of range on the
CPU (Keras 2's `Embedding`, `tf.nn.embedding_lookup`), so random integers around zero stopped the conversion of
any SavedModel taking token or category ids, and ids of only 0 and -1 would have checked two rows.
"""

from __future__ import annotations

from typing import Any

from ortserve.convert.graph_cut import data_inputs

# ops that pass ids on unchanged in value, with the input positions that carry them (Keras 3 adds the row count
# to negative ids, through a SelectV2); ConcatV2 and Pack carry them in any
_KEEPING_IDS = {"Identity": {0}, "Cast": {0}, "Reshape": {0}, "ExpandDims": {0}, "Squeeze": {0},
                "StridedSlice": {0}, "Slice": {0}, "Transpose": {0}, "SelectV2": {1, 2}, "Select": {1, 2}}
_JOINING = frozenset({"ConcatV2", "Pack"})
_GATHERS = frozenset({"GatherV2", "Gather"})


def rows_indexed(graph_def: Any, start: str) -> int | None:
    """The fewest rows among the constant tables the tensor `start` indexes along their first axis, through ops
    that keep ids as they are; None when it indexes none."""
    producers = {node.name: node for node in graph_def.node}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph_def.node:
        for position, tensor in enumerate(data_inputs(node)):
            consumers.setdefault(tensor, []).append((node, position))
    rows: list[int] = []
    seen = {start}
    frontier = [start]
    while frontier:
        for node, position in consumers.get(frontier.pop(), []):
            if node.op in _GATHERS and position == 1:
                table = _constant_rows(producers, node)
                if table is not None:
                    rows.append(table)
            elif node.op in _JOINING or position in _KEEPING_IDS.get(node.op, ()):
                output = f"{node.name}:0"
                if output not in seen:
                    seen.add(output)
                    frontier.append(output)
    return min(rows) if rows else None


def _constant_rows(producers: dict[str, Any], gather: Any) -> int | None:
    """The first dimension of a gather's table, when the table is a constant (a frozen variable) and the gather
    reads rows (axis 0)."""
    table, *rest = data_inputs(gather)
    if gather.op == "GatherV2":
        axis = _constant(producers, rest[1])
        if axis is None or _scalar(axis) != 0:
            return None
    constant = _constant(producers, table)
    if constant is None:
        return None
    dims = constant.attr["value"].tensor.tensor_shape.dim
    return int(dims[0].size) if dims and dims[0].size > 0 else None


def _constant(producers: dict[str, Any], tensor: str) -> Any | None:
    node = producers.get(tensor.split(":")[0])
    while node is not None and node.op == "Identity":
        node = producers.get(next(data_inputs(node)).split(":")[0])
    return node if node is not None and node.op == "Const" else None


def _scalar(node: Any) -> int | None:
    from tensorflow.python.framework import tensor_util

    value = tensor_util.MakeNdarray(node.attr["value"].tensor)
    return int(value) if value.size == 1 else None
