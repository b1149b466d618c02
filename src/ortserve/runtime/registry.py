"""The served models of a repository, and the rollouts that change them (loads, reloads, unloads, polls)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ortserve.errors import ConfigError, NotFound, OrtServeError
from ortserve.repository.config import Group, ModelConfig, load_config, same_serving
from ortserve.repository.layout import Fingerprint, fingerprint, model_names, shared_fingerprint, version_paths
from ortserve.repository.watcher import changes
from ortserve.routing.group import VariantGroup
from ortserve.routing.shadow import ShadowLane
from ortserve.runtime.loading import load_sessions
from ortserve.runtime.model import ServedModel, ServedVersion, State
from ortserve.runtime.session import create_session
from ortserve.runtime.signature import Signature
from ortserve.runtime.warmup import prime

log = logging.getLogger(__name__)


# A request that was routed to a version just before a rollout took it out of service still reaches it within
# this time (a REST request decodes its body between routing and queueing); only then does the version stop.
RETIRE_GRACE_S = 1.0


def _is_group(model_dir: Path) -> bool:
    try:
        return load_config(model_dir).group is not None
    except ConfigError:  # reported when the model itself loads
        return False


def _describe(signature: Signature) -> str:
    tensors = [f"{spec.name}:{spec.type.v2}{list(spec.shape)}" for spec in signature.inputs + signature.outputs]
    return "[" + ", ".join(tensors) + "]"


def _select_versions(name: str, config: ModelConfig, paths: dict[int, Path]) -> list[int]:
    chosen = config.version_policy.select(list(paths))
    if not chosen:
        raise ConfigError(f"model {name!r}: field 'version_policy' selects none of the versions on disk "
                          f"{sorted(paths)}")
    for label, version in config.labels.items():
        if version not in chosen:
            raise ConfigError(f"model {name!r}: field 'labels.{label}' points to version {version}, which is not "
                              f"served (served: {chosen})")
    routing = config.routing
    named = [(f"routing.split.{ref}", ref) for ref in routing.split]
    if routing.shadow is not None:
        named.append(("routing.shadow.target", routing.shadow.target))
    for field_name, ref in named:
        version = config.version_of(ref)
        if version not in chosen:
            what = "no label of the model" if version is None else f"version {version}, which is not served"
            raise ConfigError(f"model {name!r}: field {field_name!r} names {ref!r}: {what} (served: {chosen}, "
                              f"labels: {config.labels})")
    return chosen


class ModelRegistry:
    """The served models. Every change (a load, a new or changed version or config, an unload) is a rollout:
    what comes in is loaded and warmed beside what serves, requests move over in one step once it is ready, and
    what leaves finishes its queued and running requests before it unloads. A request never meets a model
    without an available version while one could serve it."""

    def __init__(self, repository: Path, refresh: Callable[[], Awaitable[object]] | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.repository = repository
        self._refresh = refresh  # brings a mirrored repository up to date (repository.remote) before each look
        # config.yaml fields set from outside the model's directory, by model (repository.tf_model_config)
        self._overrides = overrides if overrides is not None else {}
        self.models: dict[str, ServedModel] = {}
        self.loaded = False  # the first load of the whole repository has finished
        self.fingerprints: dict[str, Fingerprint] = {}  # each model directory as its last load read it
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: list[ServedVersion] = []
        self._finishing: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"model {name!r} is not in the repository")
        return model

    async def load_all(self) -> None:
        names = model_names(self.repository)
        groups = [name for name in names if _is_group(self.repository / name)]
        for name in [name for name in names if name not in groups] + groups:  # a group after its members
            await self.load(name)
        self.loaded = True

    async def refresh(self) -> None:
        """Bring a mirrored repository (object storage: repository.remote) up to date with its store."""
        if self._refresh is not None:
            await self._refresh()

    async def load(self, name: str) -> ServedModel:
        """Bring a model in line with its directory: a rollout (see the class). A failure is recorded on the
        model and in the log, never raised; what served before keeps serving."""
        model_dir = self.repository / name
        if not model_dir.is_dir():
            raise NotFound(f"model {name!r} is not in the repository {str(self.repository)!r}")
        async with self._locks.setdefault(name, asyncio.Lock()):
            self.fingerprints[name] = await asyncio.to_thread(fingerprint, model_dir)
            current = self.models.get(name)
            try:
                config = load_config(model_dir, self._overrides.get(name))
                if config.group is not None:
                    group = VariantGroup(name, config.group, self.models.get, self._group_contract(name, config.group))
                    self._replace(name, ServedModel(name, config, group=group))
                    log.info("model %r is a variant group of %s (%s)", name, config.group.members, config.group.policy)
                    return self.models[name]
                paths = version_paths(model_dir)
                chosen = _select_versions(name, config, paths)
            except ConfigError as exc:
                log.error("%s", exc)
                if current is not None and current.is_ready():
                    log.error("model %r keeps serving versions %s with its previous config", name,
                              current.ready_versions())
                    self._replace(name, replace(current, reload_error=str(exc)))
                    return self.models[name]
                self._replace(name, ServedModel(name, None, error=str(exc)))
                return self.models[name]
            versions, failures = await self._roll(name, current, config, chosen, paths)
            shadow = await self._shadow_lane(name, config, versions, current, failures)
            self._replace(name, ServedModel(name, config, versions=versions, shadow=shadow,
                                            reload_error="; ".join(failures)))
            return self.models[name]

    def _group_contract(self, name: str, group: Group) -> Signature:
        """The inputs and outputs every member serves now, the same for all; ConfigError naming the member that
        is missing or differs."""
        contract: tuple[str, Signature] | None = None
        for member in group.members:
            model = self.models.get(member)
            if member == name or model is None or model.group is not None:
                raise ConfigError(f"model {name!r}: field 'group.members' names {member!r}, which is not a model "
                                  "of the repository (nor a group)")
            try:
                signature = model.resolve().interface
            except OrtServeError as exc:
                raise ConfigError(f"model {name!r}: group member {member!r} cannot serve: {exc}") from None
            assert signature is not None
            if contract is None:
                contract = (member, signature)
            elif signature != contract[1]:
                raise ConfigError(f"model {name!r}: group members {contract[0]!r} and {member!r} differ in their "
                                  f"inputs or outputs: {_describe(contract[1])} against {_describe(signature)}")
        assert contract is not None
        return contract[1]

    @staticmethod
    async def _shadow_lane(name: str, config: ModelConfig, versions: dict[int, ServedVersion],
                           current: ServedModel | None, failures: list[str]) -> ShadowLane | None:
        """The shadow's own one-thread session (routing.shadow), warmed up; None without a shadow, or when the
        target is not available (then why is in `failures`). The current lane is kept, with its agreement so far,
        when the rollout left its target version and settings as they were (moving the split, say)."""
        shadow = config.routing.shadow
        if shadow is None:
            return None
        version = config.version_of(shadow.target)
        target = versions.get(version) if version is not None else None
        if target is None or not target.ready or target.signature is None:
            failures.append(f"routing.shadow: version {version} is not available, so it gets no copies")
            return None
        lane = current.shadow if current is not None else None
        if (lane is not None and current is not None and current.versions.get(target.version) is target
                and (lane.fraction, lane.max_share) == (shadow.fraction, shadow.max_share)):
            return lane

        def build() -> ort.InferenceSession:
            assert target.signature is not None
            session = create_session(name, target.path, target.config, 1)
            prime(name, session, target.signature, target.warmup or target.config.warmup, target.max_batch_size > 0,
                  target.samples)
            return session

        try:
            session = await asyncio.to_thread(build)
        except OrtServeError as exc:
            failures.append(f"routing.shadow: {exc}")
            return None
        return ShadowLane(name, target.version, session, shadow.fraction, target.max_batch_size > 0,
                          shadow.max_share)

    async def _roll(self, name: str, current: ServedModel | None, config: ModelConfig, chosen: list[int],
                    paths: dict[int, Path]) -> tuple[dict[int, ServedVersion], list[str]]:
        """The versions to serve under `config`: unchanged ones kept, new or changed ones loaded beside them (a
        failed one replaces nothing that serves); and why replacements failed."""
        serving = current.versions if current is not None else {}
        versions: dict[int, ServedVersion] = {}
        failures: list[str] = []
        shared = await asyncio.to_thread(shared_fingerprint, self.repository / name)
        for version in chosen:
            stamp = await asyncio.to_thread(fingerprint, paths[version].parent)
            old = serving.get(version)
            if (old is not None and old.ready and old.files == stamp and old.shared == shared
                    and same_serving(old.config, config)):
                versions[version] = old
                continue
            fresh = ServedVersion(name, version, paths[version], config, files=stamp, shared=shared)
            await self._load_version(fresh)
            if fresh.ready or old is None or not old.ready:
                versions[version] = fresh
                continue
            log.error("model %r version %d keeps serving as it was: its replacement failed to load", name, version)
            failures.append(f"version {version} was not replaced, its new files or config failed: {fresh.error}")
            versions[version] = old
        if not any(served.ready for served in versions.values()):
            # nothing new came up: what served before keeps serving rather than leave callers with nothing
            kept = {v: served for v, served in serving.items() if served.ready}
            if kept:
                failures.extend(f"version {v}: {served.error}" for v, served in versions.items() if served.error)
                log.error("model %r: no new version came up; versions %s keep serving", name, sorted(kept))
                return kept, failures
        return versions, failures

    def _replace(self, name: str, model: ServedModel | None) -> None:
        """Switch requests to `model` in one step, then retire the versions it no longer serves."""
        previous = self.models.get(name)
        if model is None:
            self.models.pop(name, None)
            self.fingerprints.pop(name, None)
        else:
            for served in model.versions.values():
                shadowed = model.shadow is not None and served.version != model.shadow.target_version
                served.shadow = model.shadow if shadowed else None
            self.models[name] = model
        if previous is None:
            return
        if previous.shadow is not None and (model is None or model.shadow is not previous.shadow):
            previous.shadow.close()
        kept = {id(served) for served in model.versions.values()} if model is not None else set()
        for served in previous.versions.values():
            if id(served) not in kept and served.state is not State.END:
                self._retire(served)

    def _retire(self, served: ServedVersion) -> None:
        self._retiring.append(served)  # still AVAILABLE: a request routed to it just before the switch gets in
        log.info("model %r version %d leaves service: it finishes its requests, then unloads", served.model,
                 served.version)

        async def finish() -> None:
            await asyncio.sleep(RETIRE_GRACE_S)
            served.stop()
            await asyncio.to_thread(served.join)
            self._retiring.remove(served)
            log.info("model %r version %d is unloaded", served.model, served.version)

        task = asyncio.get_running_loop().create_task(finish())
        self._finishing.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._finishing.discard)

    async def watch(self, interval_s: float) -> None:
        """Poll the repository every `interval_s` and roll out what changed there (new, changed and removed
        versions, configs and models), as TF Serving polls its base path. Runs until cancelled."""
        settle_s = min(0.5, interval_s / 4)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
                found = await changes(self.repository, self.fingerprints, settle_s)
            except (ConfigError, OSError) as exc:  # the repository itself went away or became unreadable
                log.error("polling the model repository failed: %s", exc)
                continue
            for name in found.removed:
                if name in self.models:
                    log.info("model %r was removed from the repository", name)
                    await self.unload(name)
            # groups after their members; a group that failed (a member was missing) is tried again each poll
            waiting = [name for name, model in self.models.items() if model.error and _is_group(self.repository / name)]
            changed = sorted(set(found.changed) | set(waiting), key=lambda name: _is_group(self.repository / name))
            for name in changed:
                with contextlib.suppress(NotFound):  # removed again since the poll saw it
                    await self.load(name)

    async def unload(self, name: str) -> None:
        """Take a model out of service; its versions finish what they have queued and running first."""
        self.get(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            self._replace(name, None)

    @staticmethod
    async def _load_version(served: ServedVersion) -> None:
        served.state = State.LOADING
        try:
            await asyncio.to_thread(load_sessions, served)
        except Exception as exc:  # whatever went wrong, this version is out and the others still serve
            message = str(exc) if isinstance(exc, OrtServeError) else f"{type(exc).__name__}: {exc}"
            served.state, served.error = State.END, message
            log.error("model %r version %d failed to load: %s", served.model, served.version, message)
            return
        served.start_batcher()
        log.info("model %r version %d is available on %s (max_batch_size %d)", served.model, served.version,
                 served.providers[0], served.max_batch_size)

    def stop(self) -> None:
        for model in self.models.values():
            model.stop()

    def refuse_queued(self) -> int:
        """Answer every queued request with ShuttingDown (a drain that is out of time)."""
        return sum(served.refuse_queued() for served in self._versions())

    def _versions(self) -> list[ServedVersion]:
        serving = [served for model in self.models.values() for served in model.versions.values()]
        return serving + self._retiring

    async def drain(self, timeout_s: float) -> int:
        """Stop every version, give them `timeout_s` to answer what is queued and running, refuse what is still
        queued then, and wait for the running batches (a batch cannot be interrupted). Returns how many requests
        were refused. The event loop keeps running throughout, so that REST answers still go out."""
        versions = self._versions()
        for served in versions:
            served.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not all(served.drained for served in versions) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        refused = self.refuse_queued()
        for served in versions:
            await asyncio.to_thread(served.join)
        return refused
