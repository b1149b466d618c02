"""Where a model to optimize comes from (the repository or a file), and where its variant goes."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from ortserve.convert.writer import check, file_sha256, publish, scratch_dir
from ortserve.errors import InvalidInput
from ortserve.optimize import machine
from ortserve.optimize.measure import open_session
from ortserve.repository.config import ModelConfig, load_config
from ortserve.repository.layout import version_paths
from ortserve.runtime.onnx_versions import runnable_file
from ortserve.runtime.run_errors import RUN_ERRORS
from ortserve.runtime.signature import Signature, read_signature

_ORT = ort.capi.onnxruntime_pybind11_state
# what creating a session raises for a file onnxruntime cannot load
_LOAD_ERRORS = (*RUN_ERRORS, _ORT.InvalidProtobuf, _ORT.InvalidGraph, _ORT.NoSuchFile, _ORT.NoModel)

# Operators that only a quantized graph contains: quantizing it again would stack scales on scales.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                           "ConvInteger", "QLinearConv", "QLinearMatMul", "QAttention", "DynamicQuantizeMatMul",
                           "MatMulIntegerToFloat", "DynamicQuantizeLSTM"})


@dataclass(frozen=True)
class ModelSource:
    origin: Path  # the .onnx file
    name: str  # the model's name in the repository, or the file's stem
    repository: Path | None  # set when the model lives in a repository
    version: int | None
    config: ModelConfig

    @cached_property
    def path(self) -> Path:
        """The file to read and run: `origin`, or its copy fitted to this onnxruntime (runtime.onnx_versions)."""
        return runnable_file(self.origin)

    @cached_property
    def signature(self) -> Signature:
        return loaded_signature(self.path, self.origin)

    @property
    def model_dir(self) -> Path | None:
        return self.repository / self.name if self.repository is not None else None

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "version": self.version, "path": str(self.origin),
                "sha256": file_sha256(self.origin)}


def loaded_signature(path: Path, origin: Path) -> Signature:
    """The signature of the model file at `path` (`origin`: the file as the user named it), once onnxruntime has
    loaded it; a file it cannot load is refused, with onnxruntime's reason."""
    try:
        return read_signature(open_session(path))
    except _LOAD_ERRORS as exc:
        raise InvalidInput(f"cannot load the model file {str(origin)!r}: {exc}") from None


def runnable(path: Path) -> Path:
    """A model file given as is (evaluate's --variant): the file to run (runtime.onnx_versions), checked to load."""
    fitted = runnable_file(path)
    loaded_signature(fitted, path)
    return fitted


def resolve(target: str, repository: Path | None, version: int | None = None) -> ModelSource:
    """A model name in the repository (its newest version unless one is given), or a path to an .onnx file;
    refused at once when onnxruntime cannot load it."""
    source = _located(target, repository, version)
    source.signature  # noqa: B018 - loads it now: a file that does not load is refused before any work
    return source


def _located(target: str, repository: Path | None, version: int | None) -> ModelSource:
    if repository is None:
        path = Path(target)
        if not path.is_file():
            raise InvalidInput(f"model file {target!r} does not exist (give --repository to name a model in one)")
        if path.suffix != ".onnx":
            raise InvalidInput(f"model file {target!r} is not an .onnx file")
        return ModelSource(path, path.stem, None, None, ModelConfig())
    model_dir = repository / target
    if not model_dir.is_dir():
        raise InvalidInput(f"model {target!r} is not in repository {str(repository)!r}")
    versions = version_paths(model_dir)
    chosen = max(versions) if version is None else version
    if chosen not in versions:
        raise InvalidInput(f"model {target!r} has no version {chosen}; it has {sorted(versions)}")
    return ModelSource(versions[chosen], target, repository, chosen, load_config(model_dir))


def quantized_ops(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {node.op_type for node in model.graph.node} & QUANTIZED_OPS


def refuse_quantized(path: Path, instead: str) -> None:
    found = quantized_ops(path)
    if found:
        raise InvalidInput(f"{path} is already quantized (it has {', '.join(sorted(found))}); {instead}")


def provenance(source: ModelSource, step: dict[str, Any], started: float) -> dict[str, Any]:
    return {"derived_from": source.describe(), "step": step, "machine": machine.describe(),
            "versions": {"onnx": onnx.__version__, "onnxruntime": ort.__version__},
            "seconds": round(time.perf_counter() - started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@contextmanager
def workspace(source: ModelSource, output: Path | None) -> Iterator[Path]:
    """A scratch directory on the destination's file system, removed afterwards whatever happens. The destination
    is checked first, so that no work is done for a result that could not be placed."""
    if output is None and source.repository is None:
        raise InvalidInput("give --output FILE.onnx, or --repository to publish the result as a new version")
    if output is not None and output.suffix != ".onnx":
        raise InvalidInput(f"--output {str(output)!r} must end in .onnx")
    if output is None and source.repository is not None:
        with scratch_dir(source.repository) as scratch:
            yield Path(scratch)
        return
    parent = (output or source.origin).resolve().parent
    with tempfile.TemporaryDirectory(prefix=".ortserve-", dir=parent) as scratch:
        yield Path(scratch)


def write_variant(source: ModelSource, built: Path, output: Path | None, record: dict[str, Any]) -> Path:
    """Check the built model, then place it whole: at `output`, or as the model's next version in its repository."""
    check(built)
    record = {**record, "model_sha256": file_sha256(built)}
    if output is not None:
        os.replace(built, output)  # same file system (the workspace sits beside it): all or nothing
        output.with_suffix(".provenance.json").write_text(json.dumps(record, indent=2) + "\n")
        return output
    assert source.repository is not None  # workspace() refused the case
    return publish(source.repository, source.name, built, record) / "model.onnx"

