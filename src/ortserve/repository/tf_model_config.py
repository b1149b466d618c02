"""TF Serving's model config (a ModelServerConfig: the text file of `--model_config_file`, and the message of
ModelService.HandleReloadConfigRequest) served as a model repository.

Each entry names a model and its `base_path`, a directory of numbered versions as in any repository
(`<base_path>/1/model.onnx`, with its own config.yaml when it has one). The repository the registry reads is a
scratch directory holding one link per entry, `<scratch>/<name> -> <base_path>`, so polling, rollouts and every
API work on it unchanged. An entry's `model_version_policy` and `version_labels`, when given, take the place of
config.yaml's `version_policy` and `labels`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from ortserve.errors import ConfigError
from ortserve.protos.tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig
from ortserve.repository.config import parse_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    base_path: Path
    overrides: dict[str, Any] = field(default_factory=dict)  # config.yaml fields the entry sets


def read_config_file(path: Path) -> ModelServerConfig:
    """The ModelServerConfig in the text file at `path`, as `--model_config_file` takes it."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"model config file {str(path)!r} cannot be read: {exc.strerror}") from None
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"model config file {str(path)!r} is not a ModelServerConfig in text format: {exc}"
                          ) from None
    return config


def model_entries(config: ModelServerConfig) -> list[ModelEntry]:
    """The models a ModelServerConfig lists, each checked; ConfigError naming the first problem."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError("custom_model_config is not supported: list the models in model_config_list")
    entries: list[ModelEntry] = []
    for index, model in enumerate(config.model_config_list.config):
        entry = _entry(index, model)
        if any(known.name == entry.name for known in entries):
            raise ConfigError(f"model_config_list names model {entry.name!r} twice")
        entries.append(entry)
    return entries


def _entry(index: int, model: ModelConfig) -> ModelEntry:
    name = model.name
    if not name or name.startswith((".", "_")) or "/" in name or os.sep in name:
        raise ConfigError(f"model_config_list entry {index}: name {name!r} is not a model name (one path part, "
                          "not starting with '.' or '_')")
    if not model.base_path:
        raise ConfigError(f"model {name!r}: base_path is empty")
    base_path = Path(model.base_path).absolute()
    if not base_path.is_dir():
        raise ConfigError(f"model {name!r}: base_path {model.base_path!r} is not a directory")
    if model.HasField("logging_config"):
        log.warning("model %r: logging_config is ignored: ortserve does not log requests", name)
    overrides: dict[str, Any] = {}
    if model.HasField("model_version_policy"):
        overrides["version_policy"] = _version_policy(name, model)
    if model.version_labels:
        overrides["labels"] = dict(model.version_labels)
    parse_config(name, overrides, "model_version_policy or version_labels")
    return ModelEntry(name, base_path, overrides)


def _version_policy(name: str, model: ModelConfig) -> dict[str, Any] | str:
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all"
    if choice == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"model {name!r}: model_version_policy.specific lists no versions")
        return {"specific": list(policy.specific.versions)}
    # latest, or a policy message with no choice in it: TF Serving's default, the latest version
    return {"latest": max(1, policy.latest.num_versions)}


class ConfiguredRepository:
    """The scratch repository of a model config: a link per entry to its base path. `apply` moves it to a new
    list of entries; `overrides` is read by the registry at each load."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ortserve-models-config-"))
        self.overrides: dict[str, dict[str, Any]] = {}

    def apply(self, entries: list[ModelEntry]) -> list[str]:
        """Link every entry (a changed base path relinked in one step), drop the links of models no longer
        listed; returns the names dropped."""
        listed = {entry.name for entry in entries}
        dropped = sorted(name for name in self.overrides if name not in listed)
        for name in dropped:
            (self.path / name).unlink(missing_ok=True)
            del self.overrides[name]
        for entry in entries:
            link = self.path / entry.name
            if not (link.is_symlink() and Path(os.readlink(link)) == entry.base_path):
                staged = self.path / f".{entry.name}.link"
                staged.unlink(missing_ok=True)
                staged.symlink_to(entry.base_path, target_is_directory=True)
                os.replace(staged, link)
            self.overrides[entry.name] = entry.overrides
            log.info("model %r is served from %s%s", entry.name, entry.base_path,
                     f" with {entry.overrides}" if entry.overrides else "")
        return dropped

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
