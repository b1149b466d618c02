"""Cutting a frozen TensorFlow graph at a tensor: what lies after its input, what depends on it, and which
tensor every output reaches that input through (where the ONNX graph starts when the part before it, decoding
images or splitting text, is ortserve's to do)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def without_control_inputs(graph_def: Any) -> Any:
    """A copy of the frozen graph whose outputs do not wait for what runs before the cut: a stateful op (a decoding
    loop, a table lookup) becomes a control dependency of the outputs (through NoOps), which would tie the network
    behind the cut to the input, where neither the pruned TensorFlow graph nor the ONNX model has it. The control
    inputs that place a TF1 loop's constants in its frame (from its Identity and Switch nodes) stay."""
    import tensorflow as tf

    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)
    ops = {node.name: node.op for node in copy.node}
    for node in copy.node:
        kept = [given for given in node.input
                if not (given.startswith("^") and ops.get(given[1:]) in _ORDERING_OPS)]
        if len(kept) != len(node.input):
            del node.input[:]
            node.input.extend(kept)
    return copy


_ORDERING_OPS = frozenset({"NoOp", "While", "StatelessWhile", "PartitionedCall", "StatefulPartitionedCall", "If",
                           "StatelessIf"})


def downstream(graph_def: Any, source: str) -> set[str]:
    """The names of the nodes the node `source` feeds, directly or not (itself included), by data edges."""
    consumers: dict[str, list[str]] = {}
    for node in graph_def.node:
        for given in node.input:
            if not given.startswith("^"):
                consumers.setdefault(given.split(":")[0], []).append(node.name)
    reached, frontier = {source}, [source]
    while frontier:
        for consumer in consumers.get(frontier.pop(), []):
            if consumer not in reached:
                reached.add(consumer)
                frontier.append(consumer)
    return reached


def data_inputs(node: Any) -> Iterator[str]:
    """A node's data inputs as tensor names (`node:index`)."""
    for given in node.input:
        if not given.startswith("^"):
            yield given if ":" in given else f"{given}:0"


def cuts_off(producers: dict[str, Any], source: str, cut: str, output_tensors: list[str]) -> bool:
    """Whether the outputs reach the source only through `cut`."""
    seen: set[str] = set()
    frontier = [name for name in output_tensors if name != cut]
    while frontier:
        tensor = frontier.pop()
        node_name = tensor.split(":")[0]
        if node_name == source:
            return False
        if node_name in seen:
            continue
        seen.add(node_name)
        frontier.extend(given for given in data_inputs(producers[node_name]) if given != cut)
    return True


def upstream_tensors(producers: dict[str, Any], tensor: str) -> set[str]:
    """Every tensor `tensor` is computed from, by data edges."""
    found: set[str] = set()
    frontier = [tensor]
    while frontier:
        for given in data_inputs(producers[frontier.pop().split(":")[0]]):
            if given not in found:
                found.add(given)
                frontier.append(given)
    return found


def captured_by_placeholder(signature: Any) -> dict[str, Any]:
    """The signature's captured tensors (its tables, variables) by the name of the placeholder standing for each."""
    captured = list(signature.captured_inputs)
    placeholders = signature.graph.inputs[len(signature.graph.inputs) - len(captured):]
    return {placeholder.name.split(":")[0]: value for placeholder, value in zip(placeholders, captured, strict=True)}


def past_identities(nodes: dict[str, Any], tensor: str) -> str:
    """The name of the node a tensor comes from, past Identity nodes (inlined functions pass their inputs and
    captures through them)."""
    name = tensor.lstrip("^").split(":")[0]
    while nodes[name].op == "Identity" and nodes[name].input:
        name = nodes[name].input[0].lstrip("^").split(":")[0]
    return name
