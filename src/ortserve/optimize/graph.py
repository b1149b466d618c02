"""Graph rewrites that keep FP32 arithmetic (or halve it, for GPUs): ORT offline optimization, simplification,
transformer fusion, FP16."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from ortserve.errors import InvalidInput
from ortserve.runtime.ort_guard import unsafe_optimizers

log = logging.getLogger(__name__)
# "extended" fuses operators but keeps the standard layout, so the file runs on any CPU; "layout" (and "all")
# adds NCHWc blocked layouts sized for this CPU's vector width, which ties the file to this instruction set.
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "layout": ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT}
PORTABLE_LEVEL = "extended"


def ort_optimize(source: Path, target: Path, level: str = PORTABLE_LEVEL) -> dict[str, Any]:
    if level not in LEVELS:
        raise InvalidInput(f"unknown optimization level {level!r}; expected one of {', '.join(LEVELS)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    # the written model must not carry a rewrite that changes its results (runtime.ort_guard)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=unsafe_optimizers(source))
    return {"kind": "ort-optimize", "level": level, "portable": level != "layout",
            "nodes": _node_counts(source, target)}


def simplify(source: Path, target: Path, tool: str = "onnxslim") -> dict[str, Any]:
    model = onnx.load(str(source))
    if tool == "onnxslim":
        try:
            import onnxslim
        except ImportError:
            raise InvalidInput("simplification needs onnxslim: install ortserve[optimize]") from None
        simplified = onnxslim.slim(model)
    elif tool == "onnxsim":
        try:
            import onnxsim
        except ImportError:
            raise InvalidInput("--simplifier onnxsim needs the onnxsim package (pip install onnxsim)") from None
        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise InvalidInput("onnxsim could not prove the simplified model equal to the original")
    else:
        raise InvalidInput(f"unknown simplifier {tool!r}; expected onnxslim or onnxsim")
    onnx.save(simplified, str(target))
    return {"kind": "simplify", "tool": tool, "nodes": _node_counts(source, target)}


def fuse_transformer(source: Path, target: Path, model_type: str = "bert") -> dict[str, Any]:
    """Attention, LayerNorm, GELU and embedding fusion; heads and hidden size are read off the graph."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    optimized = optimize_model(str(source), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0)
    fused = {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}
    if not fused:
        raise InvalidInput(f"transformer fusion found no {model_type} attention, normalization or activation "
                           f"pattern to fuse in {source.name}")
    optimized.save_model_to_file(str(target))
    return {"kind": "transformer-fusion", "model_type": model_type, "fused": fused,
            "nodes": _node_counts(source, target)}


def to_fp16(source: Path, target: Path, keep_io_types: bool = True) -> dict[str, Any]:
    """Half-precision weights and arithmetic, for GPUs; FP32 inputs and outputs kept unless told otherwise."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=keep_io_types, disable_shape_infer=False)
    sort_topologically(converted.graph)  # the converter appends its input casts after the nodes that use them
    onnx.save(converted, str(target))
    return {"kind": "fp16", "keep_io_types": keep_io_types, "nodes": _node_counts(source, target)}


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder the nodes so that each comes after the producers of its inputs (Kahn's algorithm, stable)."""
    available = {i.name for i in graph.input} | {init.name for init in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise InvalidInput(f"the graph has a cycle or an undefined input around node {pending[0].name!r}")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [node for node in pending if node not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def _node_counts(source: Path, target: Path) -> dict[str, int]:
    def count(path: Path) -> int:
        return len(onnx.load(str(path), load_external_data=False).graph.node)

    return {"before": count(source), "after": count(target)}
