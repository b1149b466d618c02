"""PyTorch to ONNX: a module from a `package.module:factory` entry point, exported with torch.export."""

from __future__ import annotations

import importlib
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ortserve.convert.naming import rename
from ortserve.convert.spec import InputSpec
from ortserve.errors import InvalidInput

log = logging.getLogger(__name__)


def load_file(path: Path) -> Any:
    """A TorchScript file (.pt, .pth, .torchscript), a torch.export program (.pt2), or a whole module saved with
    `torch.save(model)` (.pt, .pth: unpickled, so its classes must be importable), as a callable module."""
    import torch

    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        kind = "torch.export program" if path.suffix == ".pt2" else "TorchScript file"
        reason = f"{str(path)!r} is not a {kind}: {str(exc).splitlines()[0] if str(exc) else exc}"
    if path.suffix == ".pt2":
        raise InvalidInput(reason)
    return _pickled_module(path, reason)


def _pickled_module(path: Path, not_torchscript: str) -> Any:
    """A module saved whole with torch.save; a state dict or checkpoint is refused with what to give instead."""
    import torch

    try:  # the user's own file, named on the command line: unpickling runs its code, as torch.load always did
        loaded = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling failure means: not a pickled module either
        raise InvalidInput(f"{not_torchscript}; nor a module saved with torch.save ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else exc}; its classes must be importable: "
                           "--import MODULE)") from None
    if isinstance(loaded, torch.nn.Module):
        log.warning("%s is a module saved whole with torch.save, not TorchScript: converted from its classes",
                    path)
        return loaded.eval()
    if isinstance(loaded, dict):
        raise InvalidInput(f"{str(path)!r} holds a dict of {len(loaded)} entries (a state dict or checkpoint), not a "
                           "model: give the model's entry point, package.module:factory, and this file as --weights")
    raise InvalidInput(f"{not_torchscript}; it unpickles to a {type(loaded).__name__}, not a torch.nn.Module")


def load_module(entry_point: str, weights: Path | None) -> Any:
    """Call `package.module:factory` and check that it gives an nn.Module; load a state dict into it if given."""
    import torch

    module_name, _, attribute = entry_point.partition(":")
    if not module_name or not attribute:
        raise InvalidInput(f"entry point {entry_point!r} must look like package.module:factory")
    try:
        factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"cannot load entry point {entry_point!r}: {exc}") from None
    module = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    if not isinstance(module, torch.nn.Module):
        raise InvalidInput(f"entry point {entry_point!r} returned {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        if not weights.is_file():
            raise InvalidInput(f"weights file {str(weights)!r} does not exist")
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module.eval()


EXPORTERS = ("auto", "torch.export", "torchscript")


def export(module: Any, inputs: list[InputSpec], outputs: list[str] | None, path: Path, opset: int,
           exporter: str = "auto") -> str:
    """Export with torch.export and dynamic dimensions, falling back to the TorchScript exporter (`auto`), or with
    the one asked for. TorchScript graphs keep the patterns ONNX Runtime's transformer fusion and dynamic
    quantization look for. Returns which exporter ran."""
    import torch

    example = tuple(torch.from_numpy(np.zeros(spec.sample_shape(), spec.dtype)) for spec in inputs)
    dims: dict[str, Any] = {}
    dynamic_shapes = tuple(
        {axis: dims.setdefault(d, torch.export.Dim(d)) for axis, d in enumerate(spec.dims) if isinstance(d, str)}
        for spec in inputs)
    names = [spec.name for spec in inputs]
    outputs = outputs or _keys_answered(module, example)
    export_failure = ""  # why torch.export gave way to the TorchScript exporter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter != "torchscript":
            try:
                # Outputs are named afterwards: the exporter can give an output a name an inner value already has.
                program = torch.onnx.export(module, example, dynamo=True, external_data=False, opset_version=opset,
                                            input_names=names, dynamic_shapes=dynamic_shapes)
                model = program.model_proto
            except Exception as exc:
                export_failure = _first_line(exc)
                if exporter == "torch.export":
                    raise InvalidInput(f"torch.export could not export the model ({export_failure})") from None
                log.warning("torch.export could not export the model (%s); falling back to the TorchScript "
                            "exporter", export_failure)
            else:
                _refuse_fixed_dimensions(model.graph, inputs)
                if outputs:
                    rename(model, model.graph.output, outputs)
                onnx.save(model, str(path))
                return "torch.export"
        axes = {spec.name: {axis: d for axis, d in enumerate(spec.dims) if isinstance(d, str)} for spec in inputs}
        try:
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset, input_names=names,
                              output_names=outputs, dynamic_axes=axes)
        except Exception as exc:  # the exporter's own errors, of any type: the export step's, named
            before = f"; nor could torch.export ({export_failure})" if export_failure else ""
            raise InvalidInput(f"the TorchScript exporter could not export the model ({_first_line(exc)}){before}"
                               ) from None
        return "torchscript"


def _refuse_fixed_dimensions(graph: onnx.GraphProto, inputs: list[InputSpec]) -> None:
    """Refuse an export that fixed declared dynamic dimensions at the example's size: torch.export specializes a
    size the model's code turns into a Python number (`int(x.shape[1])`; Funnel's pooling), and ONNX Runtime
    would refuse every other size. The TorchScript exporter is no way out: its trace bakes the same number into
    the graph and keeps the dimension dynamic in name only, so the model would pass parity at the example's size
    and answer wrongly or fail at others."""
    exported = {value.name: value.type.tensor_type.shape.dim for value in graph.input}
    fixed = [f"{dim!r} of {spec.name!r} at {exported[spec.name][axis].dim_value}"
             for spec in inputs if spec.name in exported
             for axis, dim in enumerate(spec.dims)
             if isinstance(dim, str) and axis < len(exported[spec.name])
             and exported[spec.name][axis].HasField("dim_value")]
    if fixed:
        raise InvalidInput(f"torch.export fixed the dynamic dimension(s) {', '.join(fixed)}, the example's size: the "
                           "model's code turns that size into a Python number, so no export takes other sizes; "
                           "declare the dimension with its size (--input), or compute with the tensor's shape")


def _keys_answered(module: Any, example: tuple[Any, ...]) -> list[str] | None:
    """The keys of the dict the module answers, which name the ONNX outputs (both exporters flatten a dict into
    its values, in order, and would name them after inner values); None when it answers tensors."""
    import torch

    try:
        with torch.no_grad():
            answer = module(*example)
    except Exception as exc:  # the module's own errors, of any type: inputs it cannot take, named
        raise InvalidInput(f"could not export the model: it fails on an example of its declared inputs "
                           f"({_first_line(exc)})") from None
    return [str(key) for key in answer] if isinstance(answer, dict) else None


def _first_line(exc: Exception) -> str:
    """The error's type and first line, without the terminal colours torch.onnx puts in its messages. torch.export's
    first line only says which step failed ("Failed to convert the exported program ... Next steps:"): its cause
    is the first line of the message's exception summary (an op with no ONNX function, named)."""
    text = _COLOURS.sub("", str(exc))
    lines = text.splitlines()
    cause = next((line for line in lines[lines.index(_SUMMARY) + 1:] if line.strip()), None) if _SUMMARY in lines \
        else None
    if cause is not None:
        return cause.removeprefix("<class '").replace("'>: ", ": ", 1)
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


_SUMMARY = "## Exception summary"


_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def run(module: Any, feeds: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        result = module(*(torch.from_numpy(np.ascontiguousarray(feed)) for feed in feeds))
    return [tensor.detach().numpy() for tensor in _leaves(result)]


def _leaves(answer: Any) -> list[Any]:
    """The tensors of a module's answer in the order both exporters flatten it into outputs: tuples, lists and
    dicts (by insertion order) depth first, as an LSTM's `(output, (h, c))`."""
    if isinstance(answer, dict):
        return [leaf for value in answer.values() for leaf in _leaves(value)]
    if isinstance(answer, tuple | list):
        return [leaf for value in answer for leaf in _leaves(value)]
    return [answer]
