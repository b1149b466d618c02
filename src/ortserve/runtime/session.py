"""Builds ONNX Runtime sessions from a model config: session options, providers in order, fallback."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from ortserve.errors import ConfigError
from ortserve.repository.config import ExecutionProvider, ModelConfig, SessionOptions
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
    disabled, rewritten = _model_file(path)
    # the file itself, not a link to it: ONNX Runtime finds external data beside the path it is given, and
    # refuses data outside the directory the file really lives in (Engine.from_file links the caller's file)
    source = rewritten or str(path.resolve())
    if rewritten is not None:  # a rewritten model's external data is still beside the file
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(path.resolve().parent))
    while True:
        try:
            return ort.InferenceSession(
                source,
                sess_options=options,
                providers=[(p.name, dict(p.options)) for p in providers],
                disabled_optimizers=disabled,
            )
        except Exception as exc:
            if len(providers) == 1:
                raise ConfigError(f"model {model!r}: cannot load {path}: {exc}") from None
            log.warning("model %r: %s failed to start (%s); falling back to %s", model, providers[0].name,
                        exc, providers[1].name)
            providers = providers[1:]


def _model_file(path: Path) -> tuple[list[str], bytes | None]:
    """What a session of the file at `path` needs from the file itself, read once (a model's sessions share it):
    ONNX Runtime's rewrites to turn off for it (runtime.ort_guard), and the model as served when that is not the
    file (IR version and opset lowered to what ONNX Runtime reads: runtime.onnx_versions; ZipMap outputs served as
    tensors: runtime.zipmap), None when it is. A file that cannot be read as a model gets neither: ONNX Runtime
    then says what is wrong with it."""
    try:
        stat = path.stat()
    except OSError:
        return [], None
    disabled, rewritten = _read_model_file(str(path), stat.st_mtime_ns, stat.st_size)
    return list(disabled), rewritten


@functools.lru_cache(maxsize=64)
def _read_model_file(path: str, _mtime_ns: int, _size: int) -> tuple[tuple[str, ...], bytes | None]:
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, OSError):
        return (), None
    fitted = fit_to_runtime(model, path)
    disabled = unsafe_for(model.graph, path)
    rewritten = without_zipmap(model, path)
    return disabled, model.SerializeToString() if rewritten is None and fitted else rewritten
