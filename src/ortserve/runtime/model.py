"""A served model: its versions (each an ONNX Runtime session behind a batcher), labels and routing."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ortserve.errors import InvalidInput, NotFound, Unavailable
from ortserve.repository.config import ModelConfig
from ortserve.runtime.batcher import Batcher, Done, Tensors
from ortserve.runtime.image import ImageClassifier
from ortserve.runtime.signature import Signature
from ortserve.runtime.stats import VersionStats
from ortserve.runtime.validate import check_inputs, check_outputs


class State(enum.Enum):
    """Version states, named as TF Serving's ModelVersionStatus names them."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass
class ServedVersion:
    model: str
    version: int
    path: Path
    config: ModelConfig
    state: State = State.START
    error: str = ""
    session: ort.InferenceSession | None = None
    signature: Signature | None = None
    max_batch_size: int = 0
    providers: list[str] = field(default_factory=list)
    image: ImageClassifier | None = None  # set when config.yaml declares image preprocessing
    stats: VersionStats = field(default_factory=VersionStats)
    _batcher: Batcher | None = None

    @property
    def ready(self) -> bool:
        return self.state is State.AVAILABLE

    def execute(self, inputs: Tensors) -> Tensors:
        """Blocking session.run with every output; called on the worker thread."""
        assert self.session is not None and self.signature is not None
        try:
            results = self.session.run(None, inputs)
        except Exception as exc:
            raise InvalidInput(f"model {self.model!r} version {self.version} failed to run: {exc}") from None
        return dict(zip([spec.name for spec in self.signature.outputs], results, strict=True))

    def start_batcher(self) -> None:
        """Once the session is ready: the version can take requests from now on."""
        self._batcher = Batcher(
            self.execute,
            self.stats,
            name=f"ortserve-{self.model}-{self.version}",
            max_batch_size=self.max_batch_size,
            max_queue_delay_us=self.config.max_queue_delay_us,
            preferred_batch_sizes=self.config.preferred_batch_sizes,
        )
        self.state = State.AVAILABLE

    def stop(self) -> None:
        """No new requests from now on; those already queued still get their answers."""
        self.state = State.END
        if self._batcher is not None:
            self._batcher.close()
        self._batcher = None

    def submit(self, inputs: Tensors, outputs: list[str] | None, done: Done, *,
               run_later: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Validate and queue for a batch, from any thread. What validation finds is raised here; `done` later
        receives the requested outputs (all when `outputs` is None), or the run's error, on the thread that ran
        the batch (the caller's own, when it offers `run_later` and the batcher takes it up: runtime.batcher)."""
        start = time.perf_counter_ns()
        batcher, signature = self._batcher, self.signature
        if batcher is None or signature is None:
            raise Unavailable(f"model {self.model!r} version {self.version} is not available ({self.state.value})")
        try:
            check_outputs(signature, outputs)
            rows, key = check_inputs(signature, inputs, self.max_batch_size)
        except Exception:
            self.stats.request_done(time.perf_counter_ns() - start, False)
            raise
        if outputs:
            wanted = outputs

            def pick(result: Tensors | BaseException) -> None:
                done(result if isinstance(result, BaseException) else {name: result[name] for name in wanted})

            batcher.submit(inputs, rows, key, pick, start, run_later=run_later)
        else:
            batcher.submit(inputs, rows, key, done, start, run_later=run_later)

    async def infer(self, inputs: Tensors, outputs: list[str] | None = None) -> Tensors:
        """submit() for a coroutine on the event loop: the outputs, or the error raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Tensors] = loop.create_future()

        def done(result: Tensors | BaseException) -> None:
            # RuntimeError: the loop closed while the batch ran, so nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result)

        self.submit(inputs, outputs, done)
        return await future


def _settle(future: asyncio.Future[Tensors], result: Tensors | BaseException) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


@dataclass
class ServedModel:
    name: str
    config: ModelConfig | None
    error: str = ""  # a config or layout error: then the model has no versions
    versions: dict[int, ServedVersion] = field(default_factory=dict)

    def ready_versions(self) -> list[int]:
        return sorted(v for v, served in self.versions.items() if served.ready)

    def is_ready(self, version: int | None = None) -> bool:
        """Whether the version (any version, when None) can serve now."""
        if version is None:
            return bool(self.ready_versions())
        served = self.versions.get(version)
        return served is not None and served.ready

    def _labelled(self, label: str) -> int:
        labels = self.config.labels if self.config is not None else {}
        if label not in labels:
            raise NotFound(f"model {self.name!r} has no version label {label!r}")
        return labels[label]

    def resolve(self, version: int | None = None, label: str | None = None) -> ServedVersion:
        """Route to a version: an explicit one, a label's, or the newest available (TF Serving's default)."""
        if self.error:
            raise Unavailable(f"model {self.name!r} failed to load: {self.error}")
        if label is not None:
            version = self._labelled(label)
        if version is None:
            available = [v for v, served in self.versions.items() if served.ready]
            if not available:
                raise Unavailable(f"model {self.name!r} has no available version")
            return self.versions[max(available)]
        served = self.versions.get(version)
        if served is None:
            raise NotFound(f"model {self.name!r} has no served version {version}")
        if not served.ready:
            detail = f": {served.error}" if served.error else ""
            raise Unavailable(f"model {self.name!r} version {version} is {served.state.value}{detail}")
        return served

    def status_versions(self, version: int | None = None, label: str | None = None) -> list[ServedVersion]:
        """The versions a status request names (all served ones when it names none), whatever their state."""
        if self.error:
            raise NotFound(f"model {self.name!r} failed to load: {self.error}")
        if label is not None:
            version = self._labelled(label)
        if version is None:
            return [self.versions[v] for v in sorted(self.versions)]
        if version not in self.versions:
            raise NotFound(f"model {self.name!r} has no served version {version}")
        return [self.versions[version]]

    def stop(self) -> None:
        for served in self.versions.values():
            served.stop()


def zero_inputs(signature: Signature, batch_size: int, shapes: dict[str, list[int]],
                batched: bool) -> Tensors:
    """Inputs for warmup: zeros (empty strings), dynamic dimensions from `shapes` or 1."""
    feeds = {}
    for spec in signature.inputs:
        dims = list(spec.shape)
        if batched:
            dims[0] = batch_size
        override = shapes.get(spec.name)
        if override is not None:
            dims = ([batch_size] if batched else []) + list(override)
        dims = [1 if dim < 0 else dim for dim in dims]
        if spec.type.is_bytes:
            feeds[spec.name] = np.full(dims, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(dims, dtype=spec.type.numpy)
    return feeds
