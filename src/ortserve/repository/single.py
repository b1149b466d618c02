"""One .onnx file served as a repository of one model: a scratch REPO/<model>/1/model.onnx that links to it
(`ortserve serve model.onnx`, `Engine.from_file`). The link is followed when the session opens the file, so its
external data, if any, is found beside it (runtime.session)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from ortserve.repository.config import CONFIG_FILE
from ortserve.repository.layout import MODEL_FILE


def single_model_repository(source: Path, model: str, config: dict[str, Any] | None = None) -> Path:
    """A new scratch repository serving `source` as `model` version 1, with `config` as its config.yaml; the caller
    removes it when done."""
    scratch = Path(tempfile.mkdtemp(prefix="ortserve-single-"))
    version_dir = scratch / model / "1"
    version_dir.mkdir(parents=True)
    (version_dir / MODEL_FILE).symlink_to(source.resolve())
    if config:
        (scratch / model / CONFIG_FILE).write_text(yaml.safe_dump(config))
    return scratch
