"""Writes a converted model into the repository as its next version, all or nothing, with its provenance."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from ortserve.errors import InvalidInput
from ortserve.repository.layout import MODEL_FILE

PROVENANCE_FILE = "provenance.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check(model_path: Path) -> None:
    """onnx.checker's full check, shape inference included."""
    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InvalidInput(f"the written model fails onnx.checker: {exc}") from None


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() \
        else []
    return max(versions, default=0) + 1


def scratch_dir(repository: Path) -> tempfile.TemporaryDirectory[str]:
    """A work directory on the repository's file system (hidden, so the server skips it), removed afterwards."""
    repository.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".convert-", dir=repository)


def publish(repository: Path, model: str, onnx_path: Path, provenance: dict[str, Any]) -> Path:
    """Move the checked model in as REPO/<model>/<next version>/model.onnx with provenance.json beside it."""
    model_dir = repository / model
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    staged = onnx_path.parent / "staged"
    staged.mkdir()
    shutil.move(str(onnx_path), staged / MODEL_FILE)
    (staged / PROVENANCE_FILE).write_text(json.dumps({**provenance, "version": version}, indent=2) + "\n")
    target = model_dir / str(version)
    staged.rename(target)  # one rename: the version appears whole or not at all
    return target
