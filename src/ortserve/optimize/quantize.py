"""INT8 quantization with ONNX Runtime: static QDQ with calibration, dynamic for transformers and RNNs."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ortserve.convert.chatter import hushed
from ortserve.errors import InvalidInput
from ortserve.optimize.data import Samples
from ortserve.runtime.cpu import has_vnni

log = logging.getLogger(__name__)
# onnxruntime.quantization is imported where it is used: it costs half a second that `ortserve serve` need not pay.
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
DYNAMIC_OP_TYPES = ("MatMul", "Attention", "LSTM", "GRU")
CONVOLUTIONS = {"Conv", "ConvTranspose"}
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class StaticOptions:
    method: str = "minmax"
    per_channel: bool = True
    # U8 activations with S8 weights is the fast pair on x86 (VNNI's u8 x s8 dot product); S8S8 QDQ is much slower.
    activation_type: str = "uint8"
    weight_type: str = "int8"
    # Without VNNI the u8 x s8 kernels can saturate; 7-bit weights avoid it at some accuracy cost.
    reduce_range: bool = field(default_factory=lambda: not has_vnni())
    exclude: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "exclude": list(self.exclude)}


def preprocess(source: Path, target: Path) -> dict[str, Any]:
    """Symbolic shape inference and ORT's basic optimizations: the step ONNX Runtime asks for before quantizing."""
    from onnxruntime.quantization import quant_pre_process

    # When symbolic inference gives up, ONNX Runtime dumps the model with its weights into the working directory:
    # run it inside the target's (scratch) directory so that nothing lands where the user stands.
    # Both paths are resolved before the change of directory: a relative one would be read from there.
    source, target = source.resolve(), target.resolve()
    with contextlib.chdir(target.parent), hushed():
        try:
            quant_pre_process(str(source), str(target))
            return {"symbolic_shape_inference": True}
        except Exception as exc:  # symbolic inference fails on some graphs; ONNX's own inference still helps
            log.info("symbolic shape inference failed (%s); pre-processing with ONNX shape inference only", exc)
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
            return {"symbolic_shape_inference": False, "reason": str(exc).splitlines()[0][:200]}


def check_node_names(path: Path, names: tuple[str, ...]) -> None:
    known = {node.name for node in onnx.load(str(path), load_external_data=False).graph.node}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInput(f"--exclude names nodes the model does not have: {unknown}")


def _require_onnx_operators(path: Path) -> None:
    """ONNX Runtime's quantizer works on ONNX's own operators; a graph of other domains only (scikit-learn's
    ai.onnx.ml, say) has nothing it can quantize, and it fails on it with an error about opsets."""
    domains = {node.domain or "ai.onnx" for node in onnx.load(str(path), load_external_data=False).graph.node}
    if "ai.onnx" not in domains:
        raise InvalidInput(f"nothing to quantize: the model's operators are all of {', '.join(sorted(domains))}, "
                           "which INT8 quantization does not cover (it quantizes ONNX's own operators)")


def calibration_batch_size(path: Path) -> int:
    """The model's fixed batch size, or CALIBRATION_BATCH samples per calibration run when the batch is dynamic."""
    first = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[:1]
    return first[0].dim_value if first and first[0].dim_value > 0 else CALIBRATION_BATCH


def static(source: Path, target: Path, samples: Samples, options: StaticOptions,
           calibration_cache: Path | None = None) -> dict[str, Any]:
    """Static QDQ INT8 of a pre-processed model; ranges come from the samples (or the cache, when it exists)."""
    if options.method not in METHODS:
        raise InvalidInput(f"unknown calibration method {options.method!r}; expected one of {', '.join(METHODS)}")
    for name in (options.activation_type, options.weight_type):
        if name not in TYPES:
            raise InvalidInput(f"unknown quantized type {name!r}; expected one of {', '.join(TYPES)}")
    check_node_names(source, options.exclude)
    _require_onnx_operators(source)
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batch_size = calibration_batch_size(source)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = samples.batches(batch_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with hushed():
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=options.per_channel, reduce_range=options.reduce_range,
                        activation_type=QuantType[TYPES[options.activation_type]],
                        weight_type=QuantType[TYPES[options.weight_type]], nodes_to_exclude=list(options.exclude),
                        calibrate_method=CalibrationMethod[METHODS[options.method]],
                        calibration_cache_path=calibration_cache)
    return {"kind": "int8-static", "format": "QDQ", **options.describe(), "calibration_samples": len(samples),
            "calibration_data": samples.origin}


def dynamic(source: Path, target: Path, op_types: tuple[str, ...] = DYNAMIC_OP_TYPES, per_channel: bool = True,
            exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Dynamic INT8 (weights quantized ahead, activations per batch): for MatMul-heavy models."""
    asked_conv = CONVOLUTIONS & set(op_types)
    if asked_conv:
        raise InvalidInput(f"dynamic quantization of {', '.join(sorted(asked_conv))} is refused: it makes ConvInteger "
                           f"nodes, which ONNX Runtime runs slower than FP32 on CPUs and which lose accuracy; "
                           f"quantize convolutions statically with calibration data (--mode static)")
    graph = onnx.load(str(source), load_external_data=False).graph
    present = {node.op_type for node in graph.node}
    if not present & set(op_types):
        convs = " (it is convolutional: use --mode static)" if present & CONVOLUTIONS else ""
        raise InvalidInput(f"nothing to quantize dynamically: the model has none of {', '.join(op_types)}{convs}")
    check_node_names(source, exclude)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reduce_range = not has_vnni()
    with hushed():
        quantize_dynamic(str(source), str(target), op_types_to_quantize=list(op_types), per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude))
    return {"kind": "int8-dynamic", "op_types": list(op_types), "per_channel": per_channel,
            "reduce_range": reduce_range, "weight_type": "int8", "exclude": list(exclude)}
