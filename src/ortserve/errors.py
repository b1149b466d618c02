"""Protocol-free error kinds raised by the core; each front end maps them to its own status codes."""


class OrtServeError(Exception):
    """Base class: the message is shown to the client as is."""


class InvalidInput(OrtServeError):
    """The request is malformed or does not match the model signature (HTTP 400, INVALID_ARGUMENT)."""


class NotFound(OrtServeError):
    """Unknown model, version or label (HTTP 404, NOT_FOUND)."""


class Unavailable(OrtServeError):
    """The model exists but cannot serve now: loading, failed to load, or unloaded (HTTP 503, UNAVAILABLE)."""


class ConfigError(OrtServeError):
    """A model's config.yaml or repository layout is invalid; the model is not loaded."""


def require(condition: bool, message: str) -> None:
    """Raise InvalidInput with `message` unless `condition` holds: the front ends' request checks."""
    if not condition:
        raise InvalidInput(message)
