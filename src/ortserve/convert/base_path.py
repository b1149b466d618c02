"""A TF Serving model base path as a conversion source: its numbered version directories, each a SavedModel,
converted one by one into the same version numbers of one model, so that clients that ask for a version by
number (or a label pointing at one) get the same model after the move."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ortserve.convert import tensorflow
from ortserve.convert.pipeline import ConvertRequest, ConvertResult, convert
from ortserve.digits import is_decimal
from ortserve.errors import ConfigError, InvalidInput


def saved_model_versions(path: Path) -> dict[int, Path]:
    """The version directories under `path` that hold a SavedModel, by number; empty when `path` is not a base
    path (a SavedModel itself, a file, a directory without such versions)."""
    if not path.is_dir() or tensorflow.is_source(path):
        return {}
    return {int(entry.name): entry for entry in path.iterdir()
            if entry.is_dir() and is_decimal(entry.name) and int(entry.name) >= 1 and tensorflow.is_source(entry)}


def convert_versions(request: ConvertRequest, versions: dict[int, Path]) -> Iterator[tuple[int, ConvertResult]]:
    """Convert each version of a base path (saved_model_versions) into the same version of `request.model`, oldest
    first, each all or nothing. None may exist in the repository yet: that is checked before any is converted. An
    error names the version it stopped at; the versions before it stay written."""
    if request.version is not None:
        raise InvalidInput("a TF Serving base path keeps its own version numbers; --version is for one SavedModel")
    taken = sorted(number for number in versions if (request.repository / request.model / str(number)).exists())
    if taken:
        raise InvalidInput(f"model {request.model!r} in {str(request.repository)!r} has version(s) "
                           f"{', '.join(map(str, taken))} already; nothing was converted")
    for number in sorted(versions):
        try:
            result = convert(replace(request, source=str(versions[number]), version=number))
        except (InvalidInput, ConfigError) as exc:  # the same kind, naming the version
            raise type(exc)(f"version {number} ({str(versions[number])!r}): {exc}") from None
        yield number, result
