"""The protocol-free core every front end calls: health, routing to a version, and inference."""

from __future__ import annotations

from ortserve.errors import InvalidInput
from ortserve.runtime.model import ServedModel, ServedVersion
from ortserve.runtime.registry import ModelRegistry


def parse_version(text: str | None) -> int | None:
    """A version as it comes in a path or a message: a positive integer, or absent."""
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"version {text!r} is not a positive integer")
    return int(text)


class DataPlane:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        """Ready once the repository's first load has finished (models that failed are reported, not waited on)."""
        return self.registry.loaded

    def model(self, name: str) -> ServedModel:
        return self.registry.get(name)

    def version(self, name: str, version: int | None = None, label: str | None = None) -> ServedVersion:
        return self.registry.get(name).resolve(version, label)
