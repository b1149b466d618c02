"""A model repository on object storage (`s3://bucket/prefix`, `gs://`, `az://`, `file://`: any fsspec URL),
served from a local mirror, as TF Serving and Triton serve theirs.

Each sync lists the store and brings the mirror to what it holds: a new or changed version is downloaded whole
into a staging directory beside its place and renamed into it (the registry never sees half a version), a
model's own files (config.yaml, labels) are replaced one by one with a rename, and what the store no longer holds
is removed. Downloaded files are kept by content (blobs named by their SHA-256) with an index from each object's
path, size and version tag (ETag, generation or modification time) to its blob: a restart, or a version that
brings files another version already has, downloads nothing it has. The registry then reads the mirror as it
reads a local repository; under `--model-control poll` every poll syncs first.

Credentials come from each store's own environment and configuration (AWS_* variables or ~/.aws for S3, and so
on; `AWS_ENDPOINT_URL` points S3 clients at another S3-compatible server); none are logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ortserve.digits import is_decimal
from ortserve.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "ortserve" / "repositories"
_CHUNK = 1 << 20


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether a repository location is a URL (scheme://...) rather than a local directory."""
    text = str(location)
    return "://" in text and not Path(text).exists()


def redacted(url: str) -> str:
    """The URL without any user or password in it, for logs and errors."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, parts.query, ""))


@dataclass(frozen=True)
class _Object:
    path: str  # relative to the repository root, with "/"
    size: int
    tag: str  # what changes when the object's content does: ETag, generation, or modification time

    @property
    def key(self) -> str:
        return f"{self.path}\0{self.size}\0{self.tag}"


def _tag(info: dict[str, Any]) -> str:
    for field in ("ETag", "etag", "generation", "version_id", "md5Hash", "LastModified", "last_modified", "mtime",
                  "created"):
        value = info.get(field)
        if value:
            return str(value)
    return ""


class RemoteRepository:
    """A repository URL and its local mirror (`path`), brought up to date by `sync()` (blocking)."""

    def __init__(self, url: str, cache_dir: Path = DEFAULT_CACHE) -> None:
        import fsspec  # the server imports this module for remote repositories only

        self.url = url
        try:
            self._fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:  # no fsspec implementation installed for the scheme, or a bad URL
            raise ConfigError(f"model repository {redacted(url)!r} cannot be opened: {exc}") from None
        self._root = root.rstrip("/")
        digest = hashlib.sha256(redacted(url).encode()).hexdigest()[:16]
        self._blobs = cache_dir / "blobs"
        self._index_path = cache_dir / "index.json"
        self._state_path = cache_dir / "mirrors" / f"{digest}.json"
        self.path = cache_dir / "mirrors" / digest
        for directory in (self._blobs, self.path):
            directory.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, str] = _read_json(self._index_path)  # object key -> blob sha256
        self._mirrored: dict[str, str] = _read_json(self._state_path)  # mirrored file or version -> its signature

    def sync(self) -> bool:
        """Bring the mirror to what the store holds now; whether anything changed."""
        objects = self._list()
        models: dict[str, dict[str, list[_Object]]] = {}  # model -> version ("" for its own files) -> objects
        for item in objects:
            parts = PurePosixPath(item.path).parts
            if len(parts) < 2:
                continue  # a file at the top of the repository belongs to no model
            version = parts[1] if len(parts) > 2 and is_decimal(parts[1]) else ""
            if len(parts) > 2 and not version:
                continue  # a subdirectory of a model that is not a version
            models.setdefault(parts[0], {}).setdefault(version, []).append(item)
        changed = False
        wanted: set[str] = set()
        for model, groups in sorted(models.items()):
            for version, items in sorted(groups.items()):
                if version:
                    wanted.add(f"{model}/{version}")
                    changed |= self._sync_version(model, version, items)
                else:
                    for item in items:
                        wanted.add(item.path)
                        changed |= self._sync_file(item)
        changed |= self._remove_all_but(wanted, set(models))
        _write_json(self._index_path, self._index)
        _write_json(self._state_path, self._mirrored)
        return changed

    def _list(self) -> list[_Object]:
        try:
            found = self._fs.find(self._root, detail=True)
        except FileNotFoundError:
            raise ConfigError(f"model repository {redacted(self.url)!r} does not exist") from None
        objects = []
        for name, info in found.items():
            if info.get("type") == "directory":
                continue
            relative = name[len(self._root):].lstrip("/") if name.startswith(self._root) else name
            if any(part.startswith(".") for part in PurePosixPath(relative).parts):
                continue  # hidden files, as the local layout ignores them
            objects.append(_Object(relative, int(info.get("size") or 0), _tag(info)))
        return objects

    def _sync_file(self, item: _Object) -> bool:
        if self._mirrored.get(item.path) == item.key and (self.path / item.path).is_file():
            return False
        target = self.path / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.new")
        self._place(item, staged)
        os.replace(staged, target)
        self._mirrored[item.path] = item.key
        log.info("repository %s: %s updated", redacted(self.url), item.path)
        return True

    def _sync_version(self, model: str, version: str, items: list[_Object]) -> bool:
        name = f"{model}/{version}"
        signature = hashlib.sha256("\n".join(sorted(item.key for item in items)).encode()).hexdigest()
        target = self.path / model / version
        if self._mirrored.get(name) == signature and target.is_dir():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=target.parent))
        try:
            for item in items:
                relative = PurePosixPath(item.path).relative_to(name)
                destination = staging.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                self._place(item, destination)
            with _replacing(target):
                staging.rename(target)  # the version appears whole
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._mirrored[name] = signature
        log.info("repository %s: version %s downloaded", redacted(self.url), name)
        return True

    def _remove_all_but(self, wanted: set[str], models: set[str]) -> bool:
        changed = False
        for name in [name for name in self._mirrored if name not in wanted]:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            del self._mirrored[name]
            changed = True
        for directory in list(self.path.iterdir()):
            if directory.is_dir() and directory.name not in models:
                shutil.rmtree(directory, ignore_errors=True)
                changed = True
        return changed

    def _place(self, item: _Object, destination: Path) -> None:
        """Put the object's content at `destination`, from the blob store when it is there already."""
        digest = self._index.get(item.key)
        blob = None if digest is None else self._blobs / digest
        if blob is None or not blob.is_file():
            blob = self._download(item)
        try:
            os.link(blob, destination)
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(blob, destination)

    def _download(self, item: _Object) -> Path:
        source = f"{self._root}/{item.path}"
        digest = hashlib.sha256()
        handle, temporary = tempfile.mkstemp(dir=self._blobs, prefix=".download-")
        try:
            with os.fdopen(handle, "wb") as out, self._fs.open(source, "rb") as remote:
                while chunk := remote.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            blob = self._blobs / digest.hexdigest()
            os.replace(temporary, blob)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._index[item.key] = digest.hexdigest()
        return blob


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[None]:
    """Move what is at `target` aside while the new one is renamed into place, then delete it."""
    aside = target.with_name(f".{target.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        target.rename(aside)
    try:
        yield
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _read_json(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, str]) -> None:
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(json.dumps(data, sort_keys=True))
    os.replace(staged, path)
