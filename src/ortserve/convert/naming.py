"""Renaming graph inputs and outputs of an exported ONNX model to the names the user declared."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx

from ortserve.errors import InvalidInput


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a value in the graph and in every subgraph of its If and Loop nodes, whose nodes may read it from
    the outer scope (a tf.cond's branches reading the model's input)."""
    for scope in _scopes(graph):
        for node in scope.node:
            node.output[:] = [new if name == old else name for name in node.output]
            node.input[:] = [new if name == old else name for name in node.input]
        for value in (*scope.input, *scope.output, *scope.value_info):
            if value.name == old:
                value.name = new
        for initializer in scope.initializer:
            if initializer.name == old:
                initializer.name = new


def _scopes(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and its subgraphs, nested ones too."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in (attribute.g,) if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                yield from _scopes(subgraph)


def rename(model: onnx.ModelProto, values: Iterable[onnx.ValueInfoProto], names: Iterable[str]) -> None:
    """Give each graph input or output its declared name, moving aside any inner value that already has it."""
    graph = model.graph
    for value, name in zip(list(values), names, strict=True):
        if value.name == name:
            continue
        if any(output is value for output in graph.output) and name in {given.name for given in graph.input}:
            _pass_through(graph, value, name)
            continue
        used = {n for scope in _scopes(graph) for node in scope.node for n in (*node.input, *node.output)} | {
            i.name for scope in _scopes(graph) for i in scope.initializer}
        if name in used:
            _rename_value(graph, name, f"{name}__inner")
        _rename_value(graph, value.name, name)


def _pass_through(graph: onnx.GraphProto, output: onnx.ValueInfoProto, name: str) -> None:
    """An output named as an input (TensorFlow allows it: a request key answered back): ONNX names each value
    once, so the output must be that input itself, which it is when an Identity of the input produces it."""
    producer = next((node for node in graph.node if output.name in node.output), None)
    if producer is None or producer.op_type != "Identity" or list(producer.input) != [name]:
        raise InvalidInput(f"output {name!r} has the name of an input but another value; ONNX names each value "
                           "once")
    graph.node.remove(producer)
    _rename_value(graph, output.name, name)  # the output, and any inner use of the copy, read the input
