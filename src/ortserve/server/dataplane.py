"""The protocol-free core every front end calls: health, routing to a version, and inference."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from typing import Any

from ortserve.digits import is_decimal
from ortserve.errors import ConfigError, ControlDisabled, InvalidInput, NotFound, ShuttingDown
from ortserve.repository.tf_model_config import ConfiguredRepository, ModelEntry
from ortserve.runtime.gpu import GpuMonitor
from ortserve.runtime.model import ServedModel, ServedVersion
from ortserve.runtime.registry import ModelRegistry
from ortserve.server.control import ModelControl
from ortserve.server.log_settings import LogSettings, Setting
from ortserve.server.shared_memory import SharedMemoryRegions


def parse_version(text: str | None) -> int | None:
    """A version as it comes in a path or a message: a positive integer, or absent."""
    if text is None or text == "":
        return None
    if not is_decimal(text) or int(text) < 1:
        raise InvalidInput(f"version {text!r} is not a positive integer")
    return int(text)


def timeout_deadline(timeout_us: Any, now_ns: int) -> int:
    """KServe V2's `timeout` request parameter (Triton's: microseconds; 0 or absent: none) as a deadline on
    time.perf_counter_ns (0: none)."""
    if timeout_us is None:
        return 0
    if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
        raise InvalidInput(f"parameter 'timeout' must be a non-negative integer of microseconds, got {timeout_us!r}")
    return now_ns + timeout_us * 1000 if timeout_us else 0


def earliest(*deadlines_ns: int) -> int:
    """The earliest of the deadlines that are set (0: none)."""
    return min((deadline for deadline in deadlines_ns if deadline), default=0)


class DataPlane:
    def __init__(self, registry: ModelRegistry, gpus: GpuMonitor | None = None,
                 control: ModelControl | None = None, configured: ConfiguredRepository | None = None) -> None:
        self.registry = registry
        self.gpus = gpus or GpuMonitor(None, [])
        self.control = control or ModelControl("explicit", None, loopback_only=True)
        self.shared_memory = SharedMemoryRegions()  # Triton's system shared memory extension
        self.draining = False
        self.configured = configured  # the repository of a TF Serving model config, when one was given
        self._reconfiguring = asyncio.Lock()

    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        """Ready once the repository's first load has finished (models that failed are reported, not waited on),
        until the server starts to stop."""
        return self.registry.loaded and not self.draining

    def model(self, name: str) -> ServedModel:
        return self.registry.get(name)

    def version(self, name: str, version: int | None = None, label: str | None = None,
                routing_key: str | None = None) -> ServedVersion:
        """The version that answers: named, labelled, or chosen by the model's routing (`routing_key`: the
        caller's X-Routing-Key, which keeps it on one version of a traffic split)."""
        if self.draining:
            raise ShuttingDown("the server is shutting down and takes no new requests")
        return self.registry.get(name).resolve(version, label, routing_key)

    async def drain(self, timeout_s: float) -> int:
        """Refuse new requests from now on (readiness goes false first), answer those queued and running within
        `timeout_s`, refuse the rest; how many were refused."""
        self.draining = True
        return await self.registry.drain(timeout_s)

    def default_image_model(self) -> str:
        """The model POST /predict serves: the one marked `image.default`, or the only image model."""
        marked, image_models = [], []
        for name, model in sorted(self.registry.models.items()):
            if model.config is not None and model.config.image is not None:
                image_models.append(name)
                if model.config.image.default:
                    marked.append(name)
        if len(marked) == 1 or (not marked and len(image_models) == 1):
            return (marked or image_models)[0]
        if not image_models:
            raise NotFound("no model in the repository declares image preprocessing (config.yaml `image:`)")
        raise NotFound(f"several image models ({', '.join(marked or image_models)}): mark exactly one with "
                       "`image.default: true`, or name it: POST /v1/models/{model}:predict_image")

    def default_text_model(self, task: str) -> str:
        """The model POST /embed (task embed) or POST /classify (classify) serves: the text model of that task
        marked `text.default`, or the only one."""
        marked, found = [], []
        for name, model in sorted(self.registry.models.items()):
            text = None if model.config is None else model.config.text
            if text is not None and text.task == task:
                found.append(name)
                if text.default:
                    marked.append(name)
        if len(marked) == 1 or (not marked and len(found) == 1):
            return (marked or found)[0]
        if not found:
            raise NotFound(f"no model in the repository declares text preprocessing with task {task!r} "
                           "(config.yaml `text:`)")
        raise NotFound(f"several {task} models ({', '.join(marked or found)}): mark exactly one with "
                       "`text.default: true`, or name it: POST /v1/models/{model}:predict_text")

    def authorize(self, authorization: str | None) -> None:
        """Refuse a repository API call (index, load, unload) that the model control does not allow."""
        self.control.authorize(authorization)

    async def load(self, name: str, authorization: str | None) -> ServedModel:
        """Roll a model out from the repository as it is now; fail with the reasons when part of it did not come
        up (what served before then still serves)."""
        self.control.authorize(authorization)
        self.control.allow_load()
        await self.registry.refresh()
        model = await self.registry.load(name)
        if model.error or model.reload_error or not model.is_ready():
            reasons = model.error or model.reload_error or "; ".join(
                served.error for served in model.versions.values() if served.error)
            raise InvalidInput(f"failed to load model {model.name!r}: {reasons}")
        return model

    @functools.cached_property
    def _log_settings(self) -> LogSettings:
        """Made on first use: it takes over the process's log handlers (Triton's logging extension)."""
        return LogSettings()

    def log_settings(self, changes: Mapping[str, object], authorization: str | None) -> dict[str, Setting]:
        """The log settings, after `changes` (none: only read them); changing them is an administrative call."""
        if changes:
            self.control.authorize(authorization, "changing the log settings")
            return self._log_settings.update(changes)
        return self._log_settings.current()

    async def reload_config(self, entries: list[ModelEntry], authorization: str | None) -> None:
        """TF Serving's HandleReloadConfigRequest: serve the models `entries` list and no others; fail with the
        reasons when a listed model did not come up (the others still follow the new list)."""
        self.control.authorize(authorization, "HandleReloadConfigRequest")
        self.control.allow_load()
        failures = await self.reconfigure(entries)
        if failures:
            raise ConfigError("the model config was applied, but " + "; ".join(failures))

    async def reconfigure(self, entries: list[ModelEntry]) -> list[str]:
        """Serve the models of a TF Serving model config: each listed one loaded or rolled out to its entry (a
        changed base path, version policy or labels), then the models no longer listed unloaded. Returns why
        listed models are not serving (none: all are)."""
        if self.configured is None:
            raise ControlDisabled("this server serves a model repository, not a TF Serving model config; start it "
                                  "with --model-config-file to manage its models by ModelServerConfig")
        async with self._reconfiguring:
            dropped = self.configured.apply(entries)
            for entry in entries:
                await self.registry.load(entry.name)
            for name in dropped:
                with contextlib.suppress(NotFound):  # the poll saw its link go and unloaded it first
                    await self.registry.unload(name)
        failures = []
        for entry in entries:
            model = self.registry.models.get(entry.name)
            if model is None or model.error or model.reload_error or not model.is_ready():
                reasons = "not loaded" if model is None else (model.error or model.reload_error or "; ".join(
                    served.error for served in model.versions.values() if served.error))
                failures.append(f"model {entry.name!r} failed: {reasons}")
        return failures

    async def unload(self, name: str, authorization: str | None) -> None:
        self.control.authorize(authorization)
        self.control.allow_unload()
        await self.registry.unload(name)
