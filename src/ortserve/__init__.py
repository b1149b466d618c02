"""ortserve: serve ONNX models over TF Serving and KServe V2 / Triton APIs, or in process with `ortserve.Engine`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ortserve.errors import (
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    OrtServeError,
    Overloaded,
    ResourceExhausted,
    RunFailed,
    ShuttingDown,
    Unavailable,
)

if TYPE_CHECKING:
    from ortserve.engine import Engine

__version__ = "0.1.0"
__all__ = ["Cancelled", "ConfigError", "DeadlineExceeded", "Engine", "InvalidInput", "NotFound", "OrtServeError",
           "Overloaded", "ResourceExhausted", "RunFailed", "ShuttingDown", "Unavailable", "__version__"]


def __getattr__(name: str) -> Any:
    """`ortserve.Engine` imports ONNX Runtime and the core on first use, not with the command line."""
    if name == "Engine":
        from ortserve.engine import Engine

        return Engine
    raise AttributeError(f"module 'ortserve' has no attribute {name!r}")
