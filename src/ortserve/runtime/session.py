"""Builds ONNX Runtime sessions from a model config: session options, providers in order, fallback."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from ortserve.errors import ConfigError
from ortserve.repository.config import ExecutionProvider, ModelConfig, SessionOptions
from ortserve.runtime import int8_saturation
from ortserve.runtime.class_labels import class_labels
from ortserve.runtime.cpu import has_vnni
from ortserve.runtime.onnx_versions import fit_to_runtime
from ortserve.runtime.ort_guard import unsafe_for
from ortserve.runtime.zipmap import without_zipmap

log = logging.getLogger(__name__)

_GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_CPU = "CPUExecutionProvider"


def session_options(options: SessionOptions, intra_op_threads: int | None = None) -> ort.SessionOptions:
    """ONNX Runtime's options from config.yaml's `session:`; `intra_op_threads` overrides its thread count
    (instances divide the cores: runtime.instances)."""
    result = ort.SessionOptions()
    result.intra_op_num_threads = options.intra_op_threads if intra_op_threads is None else intra_op_threads
    result.inter_op_num_threads = options.inter_op_threads
    result.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if options.execution_mode == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    result.graph_optimization_level = _GRAPH_LEVELS[options.graph_optimization_level]
    result.enable_cpu_mem_arena = options.enable_cpu_mem_arena
    result.enable_mem_pattern = options.enable_mem_pattern
    result.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    result.add_session_config_entry("session.inter_op.allow_spinning", "1" if options.allow_spinning else "0")
    return result


def _usable_providers(model: str, wanted: list[ExecutionProvider]) -> list[ExecutionProvider]:
    """The wanted providers this onnxruntime build has, in order, always ending with the CPU."""
    available = set(ort.get_available_providers())
    usable = []
    for provider in wanted:
        if provider.name in available:
            usable.append(provider)
        else:
            log.warning("model %r: %s is not available in this onnxruntime build; falling back", model,
                        provider.name)
    if not any(provider.name == _CPU for provider in usable):
        usable.append(ExecutionProvider(name=_CPU))
    return usable


def create_session(model: str, path: Path, config: ModelConfig, intra_op_threads: int | None = None
                   ) -> ort.InferenceSession:
    """Create the session on the most preferred provider that loads; report fallbacks as warnings."""
    options = session_options(config.session, intra_op_threads)
    providers = _usable_providers(model, config.execution_providers)
    file = _model_file(path)
    rewritten = file.rewritten
    # the file itself, not a link to it: ONNX Runtime finds external data beside the path it is given, and
    # refuses data outside the directory the file really lives in (Engine.from_file links the caller's file)
    source = rewritten or str(path.resolve())
    if rewritten is not None:  # a rewritten model's external data is still beside the file
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(path.resolve().parent))
    while True:
        try:
            session = ort.InferenceSession(
                source,
                sess_options=options,
                providers=[(p.name, dict(p.options)) for p in providers],
                disabled_optimizers=list(file.disabled_optimizers),
            )
        except Exception as exc:
            if len(providers) == 1:
                raise ConfigError(f"model {model!r}: cannot load {path}: {exc}") from None
            log.warning("model %r: %s failed to start (%s); falling back to %s", model, providers[0].name,
                        exc, providers[1].name)
            providers = providers[1:]
            continue
        _check_int8_on_cpu(model, path, session, file.saturating_weights)
        return session


@dataclass(frozen=True)
class _ModelFile:
    """What a session of a file needs from the file itself, read once (a model's sessions share it)."""

    disabled_optimizers: tuple[str, ...] = ()  # ONNX Runtime's rewrites to turn off for it (runtime.ort_guard)
    # the model as served when that is not the file (IR version and opset lowered to what ONNX Runtime reads:
    # runtime.onnx_versions; ZipMap outputs served as tensors: runtime.zipmap), None when it is
    rewritten: bytes | None = None
    saturating_weights: tuple[str, ...] = ()  # runtime.int8_saturation
    class_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # runtime.class_labels


def _model_file(path: Path) -> _ModelFile:
    """A file that cannot be read as a model gets nothing: ONNX Runtime then says what is wrong with it."""
    try:
        stat = path.stat()
    except OSError:
        return _ModelFile()
    return _read_model_file(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _read_model_file(path: str, _mtime_ns: int, _size: int) -> _ModelFile:
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, OSError):
        return _ModelFile()
    fitted = fit_to_runtime(model, path)
    disabled = unsafe_for(model.graph, path)
    saturating = tuple(int8_saturation.saturating_weights(model.graph))
    labels = class_labels(model.graph)
    rewritten = without_zipmap(model, path)
    return _ModelFile(disabled, model.SerializeToString() if rewritten is None and fitted else rewritten, saturating,
                      labels)


def class_labels_of(path: Path) -> dict[str, tuple[str, ...]]:
    """The class names of the model file's classifier outputs (runtime.class_labels), read with its session."""
    return _model_file(path).class_labels


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def _check_int8_on_cpu(model: str, path: Path, session: ort.InferenceSession, saturating: tuple[str, ...]) -> None:
    if saturating and session.get_providers()[0] == _CPU and not has_vnni():
        _warn_once(int8_saturation.describe(model, str(path.resolve()), list(saturating)))
