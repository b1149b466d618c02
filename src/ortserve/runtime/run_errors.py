"""What a failed `session.run` means for its request: ONNX Runtime's error kinds as the core's.

ONNX Runtime raises one of its own exception types, not Python's: `InvalidArgument` for values a kernel refuses
(Gather's indices out of range), `Fail` and `RuntimeException` for a kernel that cannot run on the data it was
given (a Reshape, a broadcast the shapes do not allow), and also `Fail` when an allocation fails (a shape input
asking for terabytes). Its execution providers' own failures (`EPFail`, `DeviceReset`, `EngineError`) are the
server's, not the request's. Anything else raised by a run is a fault in ortserve and is not caught here."""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from ortserve.errors import InvalidInput, OrtServeError, ResourceExhausted, RunFailed

# the kinds a kernel raises from the data it runs on (ONNX Runtime's types share no base but Exception)
_FROM_THE_DATA: tuple[type[Exception], ...] = (ort_errors.InvalidArgument, ort_errors.Fail,
                                               ort_errors.RuntimeException, ort_errors.NotImplemented)
_FROM_THE_DEVICE: tuple[type[Exception], ...] = (ort_errors.EPFail, ort_errors.DeviceReset, ort_errors.EngineError)
RUN_ERRORS = _FROM_THE_DATA + _FROM_THE_DEVICE
# ONNX Runtime's arena (CPU and CUDA alike), std::bad_alloc, and CUDA's own words
_OUT_OF_MEMORY = ("Failed to allocate memory", "bad allocation", "out of memory")


def run_error(model: str, version: int, error: Exception, cause: str | None) -> OrtServeError:
    """The core error a run's ONNX Runtime `error` is answered with; `cause` the likely reason, when one is known
    (inputs that disagree on a dimension the model names alike)."""
    where = f"model {model!r} version {version}"
    if any(marker in str(error) for marker in _OUT_OF_MEMORY):
        return ResourceExhausted(f"{where} ran out of memory running the request: {error}")
    if isinstance(error, _FROM_THE_DEVICE):
        return RunFailed(f"{where} failed on its execution provider ({type(error).__name__}): {error}")
    return InvalidInput(f"{where} failed to run" + (f" ({cause})" if cause else "") + f": {error}")
