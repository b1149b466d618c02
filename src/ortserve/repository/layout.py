"""The model repository on disk: REPO/<model>/<version>/model.onnx, with REPO/<model>/config.yaml."""

from __future__ import annotations

import logging
from pathlib import Path

from ortserve.digits import is_decimal
from ortserve.errors import ConfigError

MODEL_FILE = "model.onnx"
SAVED_MODEL_FILE = "saved_model.pb"  # a TF Serving version directory: converted, never served as it is
_CONVERT_HINT = ("it holds TensorFlow SavedModels; convert the model's versions to ONNX with "
                 "`ortserve convert {0} --repository REPOSITORY --model {0.name}`")
log = logging.getLogger(__name__)


def model_names(repository: Path) -> list[str]:
    """Every directory directly under the repository is a model; hidden ones are skipped."""
    if not repository.is_dir():
        raise ConfigError(f"model repository {str(repository)!r} is not a directory")
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def holds_saved_models(model_dir: Path) -> bool:
    """A TF Serving base path not converted yet: numbered versions with a SavedModel, none with a model.onnx."""
    versions = [path for path in model_dir.iterdir() if path.is_dir() and is_decimal(path.name)]
    return any((path / SAVED_MODEL_FILE).is_file() for path in versions) and not any(
        (path / MODEL_FILE).is_file() for path in versions)


def misplaced_repository(repository: Path) -> str | None:
    """What a directory given as the repository is instead, when it is plainly something else: a SavedModel, a
    TF Serving model base path, or one model's directory of versions (every entry a number); None otherwise."""
    if (repository / SAVED_MODEL_FILE).is_file():
        return (f"{str(repository)!r} is a TensorFlow SavedModel, not a model repository; convert it with "
                f"`ortserve convert {repository} --repository REPOSITORY --model NAME`")
    entries = [path for path in repository.iterdir() if path.is_dir() and not path.name.startswith((".", "_"))]
    if not entries or not all(is_decimal(path.name) for path in entries):
        return None
    if holds_saved_models(repository):
        return f"{str(repository)!r} is a TF Serving model base path; {_CONVERT_HINT.format(repository)}"
    if any((path / MODEL_FILE).is_file() for path in entries):
        return (f"{str(repository)!r} holds versions of one model ({entries[0].name}/{MODEL_FILE}), not models: "
                f"serve the directory above it, or this one as `--model_base_path {repository} --model_name NAME`")
    return None


def version_paths(model_dir: Path) -> dict[int, Path]:
    """Version directories (positive integers) that hold a model.onnx; anything else is skipped with a warning."""
    versions, saved_models = {}, False
    for entry in model_dir.iterdir():
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not is_decimal(entry.name) or int(entry.name) < 1:
            log.warning("model %r: skipping %s: version directories are positive integers", model_dir.name,
                        entry.name)
            continue
        model_file = entry / MODEL_FILE
        if not model_file.is_file():
            saved_model = (entry / SAVED_MODEL_FILE).is_file()
            log.warning("model %r: skipping version %s: no %s in it%s", model_dir.name, entry.name, MODEL_FILE,
                        f" ({_CONVERT_HINT.format(model_dir)})" if saved_model else "")
            saved_models = saved_models or saved_model
            continue
        versions[int(entry.name)] = model_file
    if not versions:
        raise ConfigError(f"model {model_dir.name!r}: no version directory with a {MODEL_FILE} "
                          f"(expected {model_dir.name}/1/{MODEL_FILE})"
                          + (f"; {_CONVERT_HINT.format(model_dir)}" if saved_models else ""))
    return versions


# What a poll compares: each file's path, size and modification time. A copy in progress changes them.
FileStamp = tuple[str, int, int]
Fingerprint = tuple[FileStamp, ...]


def fingerprint(directory: Path) -> Fingerprint:
    """Every file under `directory` (hidden ones too: a copy in progress may write there first), stamped."""
    stamps = []
    for path in directory.rglob("*"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while we looked: the next poll sees the change
            continue
        if path.is_file():
            stamps.append((str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(stamps))


def shared_fingerprint(model_dir: Path) -> Fingerprint:
    """The model's own files that its versions read when they load (an image model's labels file, say): all but
    the version directories and config.yaml (compared as a config)."""
    return tuple(stamp for stamp in fingerprint(model_dir)
                 if not is_decimal(Path(stamp[0]).parts[0]) and stamp[0] != "config.yaml")
