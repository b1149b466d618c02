"""Protocol-free error kinds raised by the core; each front end maps them to its own status codes."""


class OrtServeError(Exception):
    """Base class: the message is shown to the client as is."""


class InvalidInput(OrtServeError):
    """The request is malformed or does not match the model signature (HTTP 400, INVALID_ARGUMENT)."""


class NotFound(OrtServeError):
    """Unknown model, version or label (HTTP 404, NOT_FOUND)."""


class Unavailable(OrtServeError):
    """The model exists but cannot serve now: loading, failed to load, or unloaded (HTTP 503, UNAVAILABLE)."""


class Overloaded(Unavailable):
    """Refused at admission: the request could not be served in time, or the queue is full (HTTP 503 with
    Retry-After, UNAVAILABLE), before it took a queue slot or any compute."""

    def __init__(self, message: str, retry_after_s: float, reason: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason  # queue_full, deadline or latency_slo: the metrics' label


class ShuttingDown(Unavailable):
    """The server is draining before it stops: it takes no new requests (HTTP 503, UNAVAILABLE)."""


class DeadlineExceeded(OrtServeError):
    """The request's deadline passed while it was queued: it was dropped, never run (HTTP 504,
    DEADLINE_EXCEEDED)."""


class Cancelled(OrtServeError):
    """The caller went away (cancelled, disconnected) while its request was queued: it was dropped, never run."""


class ResourceExhausted(OrtServeError):
    """The run could not get the memory it needed (HTTP 507, RESOURCE_EXHAUSTED), as a request whose shape
    input asks for terabytes."""


class RunFailed(OrtServeError):
    """The model's execution provider failed while running the request: the server's fault, not the request's
    (HTTP 500, INTERNAL), with the provider's message."""


class Unauthenticated(OrtServeError):
    """The call needs the admin token and did not carry the right one (HTTP 401, UNAUTHENTICATED)."""


class PermissionDenied(OrtServeError):
    """The call is not allowed from here at all (HTTP 403, PERMISSION_DENIED)."""


class ControlDisabled(OrtServeError):
    """The model control mode does not take this repository call (HTTP 400, FAILED_PRECONDITION)."""


class ConfigError(OrtServeError):
    """A model's config.yaml or repository layout is invalid; the model is not loaded."""


def require(condition: bool, message: str) -> None:
    """Raise InvalidInput with `message` unless `condition` holds: the front ends' request checks."""
    if not condition:
        raise InvalidInput(message)
