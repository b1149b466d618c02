"""Writes a converted model into the repository as its next version, all or nothing, with its provenance."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from ortserve.digits import is_decimal
from ortserve.errors import ConfigError, InvalidInput
from ortserve.repository.config import ModelConfig, load_config, parse_config, update_config
from ortserve.repository.layout import MODEL_FILE, version_paths
from ortserve.runtime.contract import check_contract, declare
from ortserve.runtime.signature import Signature, read_signature

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
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and is_decimal(p.name)] if model_dir.is_dir() \
        else []
    return max(versions, default=0) + 1


def scratch_dir(repository: Path) -> tempfile.TemporaryDirectory[str]:
    """A work directory on the repository's file system (hidden, so the server skips it), removed afterwards."""
    repository.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".convert-", dir=repository)


def _signature(path: Path) -> Signature:
    return read_signature(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))


def _versions(model_dir: Path) -> dict[int, Path]:
    try:
        return version_paths(model_dir) if model_dir.is_dir() else {}
    except ConfigError:  # a model directory without versions yet
        return {}


def publish(repository: Path, model: str, onnx_path: Path, provenance: dict[str, Any],
            files: dict[str, Path] | None = None, settings: dict[str, Any] | None = None,
            version: int | None = None) -> Path:
    """Move the checked model in as REPO/<model>/<version>/model.onnx (by default the next version; a given one
    must not exist yet) with provenance.json (and copies of `files`, by name: a tokenizer, labels) beside it.
    `settings` (config.yaml sections, e.g. its `text:` preprocessing) are written into a config.yaml that does not
    set those sections yet.

    The model's config.yaml declares its inputs and outputs (a new version must keep them, or the server would
    refuse it); a model without a declaration gets its newest version's, or this one's when it is the first.
    """
    model_dir = repository / model
    signature = _signature(onnx_path)
    config = load_config(model_dir) if model_dir.is_dir() else ModelConfig()
    declared = bool(config.inputs or config.outputs)
    contract, declaration = config, {}
    if not declared:
        existing = _versions(model_dir)
        declaration = declare(_signature(existing[max(existing)]) if existing else signature)
        contract = parse_config(model, declaration)
    unset = {name: value for name, value in (settings or {}).items() if name not in config.model_fields_set}
    try:
        check_contract(model, "new", contract, signature)
    except ConfigError as exc:
        raise InvalidInput(f"the new version breaks the model's declared contract; nothing was written: {exc}") \
            from None
    if version is not None and (model_dir / str(version)).exists():
        raise InvalidInput(f"model {model!r} has a version {version} already; nothing was written")
    model_dir.mkdir(parents=True, exist_ok=True)
    if declaration or unset:
        update_config(model_dir, {**declaration, **unset})
    if version is None:
        version = next_version(model_dir)
    staged = onnx_path.parent / "staged"
    staged.mkdir()
    shutil.move(str(onnx_path), staged / MODEL_FILE)
    (staged / PROVENANCE_FILE).write_text(json.dumps({**provenance, "version": version}, indent=2) + "\n")
    for name, source in (files or {}).items():
        shutil.copyfile(source, staged / name)
    target = model_dir / str(version)
    staged.rename(target)  # one rename: the version appears whole or not at all
    return target
