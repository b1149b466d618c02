"""A TF Serving model base path as a conversion source: its numbered version directories, each a SavedModel,
converted one by one into the same version numbers of one model, so that clients that ask for a version by
number (or a label pointing at one) get the same model after the move. A whole `--model_config_file` moves the
same way, entry by entry, and leaves a copy of the config listing the converted models
(`ortserve serve --model_config_file` serves it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf import text_format

from ortserve.convert import tensorflow
from ortserve.convert.pipeline import ConvertRequest, ConvertResult, convert
from ortserve.digits import is_decimal
from ortserve.errors import ConfigError, InvalidInput
from ortserve.protos.tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig
from ortserve.repository.tf_model_config import model_entries, read_config_file

MIGRATED_CONFIG_FILE = "models.config"


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


@dataclass(frozen=True)
class Migration:
    """A TF Serving model config to move: each entry's SavedModel versions, and the config as read."""

    config: ModelServerConfig
    versions: dict[str, dict[int, Path]]  # by model name, in the config's order
    config_out: Path  # the config that will list the converted models


def plan_migration(config_file: Path, repository: Path) -> Migration:
    """Read a `--model_config_file` and check, before anything is converted, that every entry's base path holds
    SavedModel versions that the repository does not have yet, and that the new config file is not there yet."""
    config = read_config_file(config_file)
    versions = {}
    for entry in model_entries(config):
        found = saved_model_versions(entry.base_path)
        if not found:
            raise InvalidInput(f"model {entry.name!r}: base_path {str(entry.base_path)!r} holds no numbered version "
                               "directory with a SavedModel in it")
        taken = sorted(number for number in found if (repository / entry.name / str(number)).exists())
        if taken:
            raise InvalidInput(f"model {entry.name!r} in {str(repository)!r} has version(s) "
                               f"{', '.join(map(str, taken))} already; nothing was converted")
        versions[entry.name] = found
    config_out = repository / MIGRATED_CONFIG_FILE
    if config_out.exists():
        raise InvalidInput(f"{str(config_out)!r} exists already; nothing was converted")
    return Migration(config, versions, config_out)


def migrate(plan: Migration, request: ConvertRequest) -> Iterator[tuple[str, int, ConvertResult]]:
    """Convert every entry's versions (convert_versions) into models of the same names under
    `request.repository`, then write the config listing them (write_migrated_config)."""
    for name, versions in plan.versions.items():
        for number, result in convert_versions(replace(request, model=name), versions):
            yield name, number, result
    write_migrated_config(plan, request.repository)


def write_migrated_config(plan: Migration, repository: Path) -> Path:
    """The model config with each base path moved to the model's directory in `repository`: everything else
    (names, version policies, labels) as it was."""
    config = ModelServerConfig()
    config.CopyFrom(plan.config)
    for model in config.model_config_list.config:
        model.base_path = str((repository / model.name).absolute())
    plan.config_out.write_text(text_format.MessageToString(config))
    return plan.config_out
