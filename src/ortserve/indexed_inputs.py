"""Integer inputs an ONNX graph uses as row numbers of a constant table (an embedding's token or category ids).

Samples generated for such an input must be ids the table has. ONNX Runtime's Gather refuses an id out of range,
so `quantize`, `optimize` and `tune` without `--data` failed on any model embedding fewer ids than their random
range; and the source frameworks refuse them too (PyTorch's Embedding, TensorFlow's gather on the CPU), so
`convert` failed parity on any model taking ids, whose samples were integers around zero (-1 among them). Both
read the bound from the ONNX graph, whatever framework it came from.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

# ops that pass ids on unchanged in value, with the input positions that carry them (Keras 3 adds the row count
# to negative ids, through a Where)
_KEEPING_IDS = {"Identity": {0}, "Cast": {0}, "Reshape": {0}, "Unsqueeze": {0}, "Squeeze": {0}, "Flatten": {0},
                "Slice": {0}, "Transpose": {0}, "Where": {1, 2}}


def indexed_rows(path: Path) -> dict[str, int]:
    """Each integer graph input that indexes constant tables along their first axis, with the fewest rows among
    them, through ops that keep ids as they are."""
    graph = onnx.load(str(path), load_external_data=False).graph
    rows_of = {initializer.name: initializer.dims[0] for initializer in graph.initializer if initializer.dims}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            dims = node.attribute[0].t.dims
            if dims:
                rows_of[node.output[0]] = dims[0]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    found = {}
    for graph_input in graph.input:
        elem_type = graph_input.type.tensor_type.elem_type
        if not elem_type or helper.tensor_dtype_to_np_dtype(elem_type).kind not in "iu":
            continue
        rows = _rows_reached(graph_input.name, consumers, rows_of)
        if rows is not None:
            found[graph_input.name] = rows
    return found


def _rows_reached(start: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
                  rows_of: dict[str, int]) -> int | None:
    rows: list[int] = []
    seen = {start}
    frontier = [start]
    while frontier:
        for node, position in consumers.get(frontier.pop(), []):
            if node.op_type == "Gather" and position == 1:
                axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 0)
                if axis == 0 and node.input[0] in rows_of and rows_of[node.input[0]] > 0:
                    rows.append(rows_of[node.input[0]])
            elif node.op_type == "Concat" or position in _KEEPING_IDS.get(node.op_type, ()):
                for output in node.output:
                    if output not in seen:
                        seen.add(output)
                        frontier.append(output)
    return min(rows) if rows else None
