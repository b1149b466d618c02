"""Lookup tables in TensorFlow graphs: Keras' StringLookup and IntegerLookup layers, tf.lookup.StaticHashTable.

Frozen, a table stays a resource that the graph reads at run time (ONNX has no resources), so the frozen graph
keeps an input for it that no client could send. Each table the graph only looks keys up in is exported from the
loaded model and becomes an ONNX LabelEncoder (ai.onnx.ml) holding its keys, values and default: the converted
model takes the same strings or integers as the source. A table the graph also changes (a MutableHashTable it
inserts into) is left for the caller to refuse."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ortserve.convert.graph_cut import past_identities, upstream_tensors

_FIND = "LookupTableFindV2"
_SIZE = "LookupTableSizeV2"
# the key and value types a LabelEncoder holds, as TensorFlow's dtype enum (DT_STRING, DT_INT64, DT_INT32,
# DT_FLOAT) and ONNX's (TensorProto's); int32 keys and values are cast to and from int64 around it
_TF_TYPES = frozenset({7, 9, 3, 1})
_STRING, _INT64, _INT32, _FLOAT = 8, 7, 6, 1
_ATTRIBUTE = {_STRING: "strings", _INT64: "int64s", _INT32: "int64s", _FLOAT: "floats"}
_DEFAULT = {_STRING: "default_string", _INT64: "default_int64", _INT32: "default_int64", _FLOAT: "default_float"}


@dataclass(frozen=True)
class LookupTable:
    keys: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class Lookups:
    """The tables a frozen graph looks keys up in, by the name of the HashTableV2 node now standing for each (its
    shared_name too), and the keys of each model input that is looked up (the values worth sending it), by the
    tensor the input starts at."""

    tables: dict[str, LookupTable]
    vocabularies: dict[str, np.ndarray]

    def op_handlers(self) -> dict[str, tuple[Any, list[Any]]]:
        """tf2onnx custom op handlers turning the graph's lookups into LabelEncoder nodes."""
        if not self.tables:
            return {}
        return {_FIND: (partial(_label_encoder, tables=self.tables), []),
                _SIZE: (partial(_table_size, tables=self.tables), [])}


def resolve(graph_def: Any, captured: dict[str, Any], resource_inputs: list[str], starts: list[str]
            ) -> tuple[Lookups, list[str]]:
    """Find the lookups of the frozen `graph_def` whose tables are among its `resource_inputs` (placeholders
    standing for the `captured` resources, by name), export those tables and turn their placeholders into
    HashTableV2 nodes, in place. The vocabularies are those of the tensors the model starts at (`starts`: its
    inputs' placeholders, or where its graph is cut). Returns the lookups and the resource inputs left
    unresolved."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    placeholders = {name.split(":")[0] for name in resource_inputs}
    table_uses: dict[str, list[Any]] = {}
    for node in graph_def.node:
        for given in node.input:
            source = past_identities(nodes, given)
            if source in placeholders and node.op != "Identity":
                table_uses.setdefault(source, []).append(node)
    tables: dict[str, LookupTable] = {}
    vocabularies: dict[str, np.ndarray] = {}
    for placeholder, uses in table_uses.items():
        if placeholder not in captured or any(use.op not in (_FIND, _SIZE) for use in uses):
            continue
        finds = [use for use in uses if use.op == _FIND]
        if not finds:
            continue
        key_type, value_type = finds[0].attr["Tin"].type, finds[0].attr["Tout"].type
        if key_type not in _TF_TYPES or value_type not in _TF_TYPES:
            continue
        keys, values = tf.raw_ops.LookupTableExportV2(
            table_handle=captured[placeholder], Tkeys=tf.dtypes.as_dtype(key_type),
            Tvalues=tf.dtypes.as_dtype(value_type))
        tables[placeholder] = LookupTable(keys.numpy(), values.numpy())
        for find in finds:
            searched = _tensor(find.input[1])
            looked_up = upstream_tensors(nodes, searched) | {searched}
            sources = [start for start in starts if _tensor(start) in looked_up]
            if len(sources) == 1:
                vocabularies[sources[0]] = tables[placeholder].keys
        table = nodes[placeholder]
        table.op = "HashTableV2"
        table.attr.clear()
        table.attr["shared_name"].s = placeholder.encode()
        table.attr["key_dtype"].type = key_type
        table.attr["value_dtype"].type = value_type
    left = [name for name in resource_inputs if name.split(":")[0] not in tables]
    return Lookups(tables, vocabularies), left


def _tensor(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _table_of(node: Any, tables: dict[str, LookupTable]) -> tuple[Any, LookupTable]:
    table_node = node.inputs[0]
    while table_node.type == "Identity":
        table_node = table_node.inputs[0]
    return table_node, tables[table_node.get_attr_value("shared_name").decode()]


def _drop_if_unused(ctx: Any, table_node: Any) -> None:
    if not ctx.find_output_consumers(table_node.output[0]):
        ctx.remove_node(table_node.name)


def _label_encoder(ctx: Any, node: Any, name: str, args: list[Any], tables: dict[str, LookupTable]) -> None:
    """LookupTableFindV2(table, keys, default) as LabelEncoder(keys) with the table's pairs and default."""
    from onnx import TensorProto
    from tf2onnx import constants, utils

    table_node, table = _table_of(node, tables)
    default_node = node.inputs[2]
    while default_node.type == "Identity":
        default_node = default_node.inputs[0]
    utils.make_sure(default_node.is_const(), "the default value of table lookup %s is not a constant", name)
    key_type, value_type = ctx.get_dtype(node.input[1]), ctx.get_dtype(node.output[0])
    default = default_node.get_tensor_value(as_list=False).reshape(())
    attributes = {
        f"keys_{_ATTRIBUTE[key_type]}": _attribute_values(table.keys, key_type),
        f"values_{_ATTRIBUTE[value_type]}": _attribute_values(table.values, value_type),
        _DEFAULT[value_type]: _attribute_values(default.reshape(1), value_type)[0],
    }
    keys_tensor, outputs = node.input[1], list(node.output)
    # TensorFlow cannot infer a lookup's shape from a table it does not hold: the keys' shape
    shape, dtype = ctx.get_shape(outputs[0]) or ctx.get_shape(keys_tensor), ctx.get_dtype(outputs[0])
    ctx.remove_node(node.name)
    if key_type == _INT32:
        keys_tensor = ctx.make_node("Cast", [keys_tensor], attr={"to": TensorProto.INT64},
                                    name=utils.make_name(f"{name}_keys")).output[0]
    encoded_outputs = outputs if value_type != _INT32 else [utils.make_name(f"{name}_int64")]
    ctx.make_node("LabelEncoder", [keys_tensor], attr=attributes, outputs=encoded_outputs, name=name,
                  domain=constants.AI_ONNX_ML_DOMAIN, shapes=[shape],
                  dtypes=[dtype if value_type != _INT32 else TensorProto.INT64])
    if value_type == _INT32:
        ctx.make_node("Cast", encoded_outputs, attr={"to": TensorProto.INT32}, outputs=outputs,
                      name=utils.make_name(f"{name}_values"), shapes=[shape], dtypes=[dtype])
    _drop_if_unused(ctx, table_node)


def _table_size(ctx: Any, node: Any, name: str, args: list[Any], tables: dict[str, LookupTable]) -> None:
    table_node, table = _table_of(node, tables)
    output = node.output[0]
    ctx.remove_node(node.name)
    size = ctx.make_const(name, np.array(len(table.keys), dtype=np.int64))
    ctx.replace_all_inputs(output, size.output[0])
    _drop_if_unused(ctx, table_node)


def _attribute_values(array: np.ndarray, type_enum: int) -> list[Any]:
    if type_enum == _STRING:
        return [value if isinstance(value, bytes) else str(value).encode() for value in array.reshape(-1)]
    if type_enum == _FLOAT:
        return [float(value) for value in array.reshape(-1)]
    return [int(value) for value in array.reshape(-1)]
