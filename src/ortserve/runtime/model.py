"""A served model: its versions (each an ONNX Runtime session behind a batcher), labels and routing."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import onnxruntime as ort

from ortserve.errors import InvalidInput, NotFound, ShuttingDown, Unavailable
from ortserve.repository.config import ModelConfig, Warmup
from ortserve.repository.layout import Fingerprint
from ortserve.routing.cache import ResponseCache, request_key
from ortserve.routing.shadow import ShadowLane
from ortserve.routing.split import Split
from ortserve.runtime.admission import Admission, AdmissionPolicy
from ortserve.runtime.batcher import Assembly, Batcher, Cancel, Done, Execute, RunLater, Tensors
from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.encoded_images import carries_encoded_images, decode_then, decoded
from ortserve.runtime.image import ImageClassifier
from ortserve.runtime.instances import InstanceScaler, SessionPool
from ortserve.runtime.run_errors import RUN_ERRORS, run_error
from ortserve.runtime.scheduler import BatchingPolicy, Scheduler
from ortserve.runtime.signature import Signature, TensorSpec
from ortserve.runtime.slices import JoinedAnswer, row_slices
from ortserve.runtime.stats import VersionStats
from ortserve.runtime.text import TextModel
from ortserve.runtime.threads import ThreadChoice
from ortserve.runtime.validate import BatchTooLarge, check_inputs, check_outputs

if TYPE_CHECKING:  # the registry builds groups; a model only calls the one it is given
    from ortserve.routing.group import VariantGroup


class State(enum.Enum):
    """Version states, named as TF Serving's ModelVersionStatus names them."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(eq=False)  # compared by identity: a version and its replacement may hold equal fields
class ServedVersion:
    model: str
    version: int
    path: Path
    config: ModelConfig
    state: State = State.START
    error: str = ""
    session: ort.InferenceSession | None = None  # the first instance's: signature and warmup
    sessions: SessionPool | None = None
    calibration: BatchCosts | None = None  # measured at warmup
    signature: Signature | None = None
    max_batch_size: int = 0
    warmup: Warmup | None = None  # run at load: config.yaml's, with shapes guessed where it leaves them
    samples: Tensors | None = None  # the model's own warmup inputs (runtime.samples), if it has them
    unbatched_reason: str | None = None  # why batching was not inferred for a model whose shapes allow it
    threads: int = 0  # intra-op threads of each instance; 0: ONNX Runtime's default
    # A one-thread version's session on ONNX Runtime's default thread pool, and warmup's timings of both by batch
    # rows: a lone instance runs large batches on whichever is faster as it runs (runtime.threads)
    pool_session: ort.InferenceSession | None = None
    pool_timings: dict[int, tuple[float, float]] = field(default_factory=dict)
    thread_choice: ThreadChoice | None = None  # the lone instance's, for the statistics
    providers: list[str] = field(default_factory=list)
    gpu: int | None = None  # the GPU it runs on (CUDA, TensorRT)
    image: ImageClassifier | None = None  # set when config.yaml declares image preprocessing
    text: TextModel | None = None  # set when config.yaml declares text preprocessing
    class_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the model's own (runtime.class_labels)
    stats: VersionStats = field(default_factory=VersionStats)
    files: Fingerprint = ()  # the version directory as it was loaded: a poll reloads the version when it changes
    shared: Fingerprint = ()  # the model's other files it read (repository.layout.shared_fingerprint), likewise
    cache: ResponseCache | None = None  # config.yaml `response_cache`
    shadow: ShadowLane | None = None  # where copies of this version's answered requests go (routing.shadow)
    observer: Observer | None = None  # told of each request's start and end (a variant group's view of it)
    _batcher: Batcher | None = None
    _scaler: InstanceScaler | None = None

    @property
    def ready(self) -> bool:
        return self.state is State.AVAILABLE

    def seen_as(self, model: str, observer: Observer) -> ServedVersion:
        """This version answering under another model's name as its version 1 (a variant group's member): same
        sessions, batcher, cache and statistics; `observer` learns of every request it takes."""
        view = copy.copy(self)
        view.model, view.version, view.observer = model, 1, observer
        return view

    @property
    def interface(self) -> Signature | None:
        """What clients see and send: a text model's strings in and embeddings or scores out, else the ONNX
        model's own signature. A text model also takes its token tensors, by the model's input names."""
        return self.text.signature if self.text is not None else self.signature

    def output_spec(self, name: str) -> TensorSpec | None:
        """An output of the interface, or of the ONNX model (a text model answering its token tensors)."""
        for signature in (self.interface, self.signature):
            spec = None if signature is None else signature.output(name)
            if spec is not None:
                return spec
        return None

    def labels_of(self, output: str) -> Sequence[str] | None:
        """The class names of an output's scores, by index: an image model's labels file for its scores output,
        else those the ONNX model carries (a scikit-learn classifier's); None when there are none."""
        image = self.image
        if image is not None and image.output.name == output and image.labels:
            return image.labels
        return self.class_labels.get(output)

    @property
    def batcher(self) -> Batcher | None:
        return self._batcher

    def executor(self, session: ort.InferenceSession, choice: ThreadChoice | None = None) -> Execute:
        """Blocking session.run with every output, by name; called on the thread that runs the batch. With a
        `choice`, large batches run on the one-thread session or the pool's, whichever is faster."""
        assert self.signature is not None
        names = [spec.name for spec in self.signature.outputs]

        def execute(inputs: Tensors) -> Tensors:
            try:
                if choice is None:
                    results = session.run(None, inputs)
                else:
                    rows = next(iter(inputs.values())).shape[0]
                    results = choice.run(rows, lambda chosen: chosen.run(None, inputs), time.perf_counter_ns)
            except RUN_ERRORS as exc:
                assert self.signature is not None
                raise run_error(self.model, self.version, exc, self.signature.dimension_disagreement(inputs)) from None
            return dict(zip(names, results, strict=True))

        return execute

    def instance_executors(self, count: int) -> list[Execute]:
        """One executor per instance; a lone instance of a one-thread small model chooses between its session and
        the pool's for large batches (runtime.threads)."""
        assert self.sessions is not None
        sessions = self.sessions.sessions(count)
        if count == 1 and self.pool_session is not None:
            self.thread_choice = ThreadChoice(sessions[0], self.pool_session, self.pool_timings)
            return [self.executor(sessions[0], self.thread_choice)]
        self.thread_choice = None
        return [self.executor(session) for session in sessions]

    def start_batcher(self) -> None:
        """Once the sessions are ready: the version can take requests from now on."""
        config = self.config
        delay = config.max_queue_delay_us
        slo_ns = None if config.latency_slo_ms is None else int(config.latency_slo_ms * 1e6)
        policy = BatchingPolicy(self.max_batch_size, None if delay is None else delay * 1000,
                                tuple(sorted(set(config.preferred_batch_sizes))), slo_ns)
        admission = AdmissionPolicy(config.queue.admission, config.queue.max_rows,
                                    int(config.queue.max_wait_ms * 1e6), slo_ns)
        low, high = config.instances.min, config.instances.max
        name = f"ortserve-{self.model}-{self.version}"
        if config.response_cache is not None:
            self.cache = ResponseCache(config.response_cache.max_bytes)
        self._batcher = Batcher(self.instance_executors(low), self.stats, name=name,
                                scheduler=Scheduler(policy, self.calibration, low), admission=Admission(admission))
        if high > low:
            self._scaler = InstanceScaler(self._batcher, self.stats, self.instance_executors, low=low, high=high,
                                          name=name)
            self._scaler.start()
        self.state = State.AVAILABLE

    def stop(self) -> None:
        """No new requests from now on; those already queued still get their answers."""
        self.state = State.END
        if self._scaler is not None:
            self._scaler.stop()
        if self._batcher is not None:
            self._batcher.close()

    @property
    def drained(self) -> bool:
        """Nothing queued or running."""
        return self._batcher is None or self._batcher.idle

    def refuse_queued(self) -> int:
        """Answer what is still queued with ShuttingDown; how many were refused."""
        if self._batcher is None:
            return 0
        return self._batcher.refuse_queued(ShuttingDown(f"the server stopped before model {self.model!r} version "
                                                        f"{self.version} could run this request"))

    def join(self) -> None:
        """Wait for the version's threads to end (after stop(), once what is running has finished)."""
        if self._batcher is not None:
            self._batcher.join()

    def precheck(self, deadline_ns: int = 0) -> None:
        """Refuse at once (Overloaded) a request the version could not take even at one row, before the front end
        spends time decoding it."""
        batcher = self._batcher
        if batcher is None or self.state is not State.AVAILABLE:
            raise Unavailable(f"model {self.model!r} version {self.version} is not available ({self.state.value})")
        batcher.precheck(deadline_ns)

    def submit(self, inputs: Tensors, outputs: list[str] | None, done: Done, *, deadline_ns: int = 0,
               run_later: RunLater | None = None) -> Cancel | None:
        """Validate, admit and queue for a batch, from any thread. What validation and admission find is raised
        here; `done` later receives the requested outputs (all when `outputs` is None), or the error, on the
        thread that ran the batch (the caller's own, when it offers `run_later` and the batcher takes it up:
        runtime.batcher). `deadline_ns` (time.perf_counter_ns; 0: none) is when the caller stops waiting. Returns
        a callable that withdraws the request while it is queued (the caller has gone), or None when it runs at
        once on the caller's thread. Encoded images for an image model are decoded first, off this thread
        (runtime.encoded_images)."""
        start = time.perf_counter_ns()
        image = self.image
        if image is not None and carries_encoded_images(image, inputs):
            def decode_and_submit() -> Cancel | None:
                try:
                    pixels = decoded(image, inputs)
                except InvalidInput:  # counted as the checks count a bad request; submit() counts its own
                    self.stats.request_done(time.perf_counter_ns() - start, False)
                    raise
                return self.submit(pixels, outputs, done, deadline_ns=deadline_ns)

            return decode_then(decode_and_submit, done)
        try:
            batcher, inputs, rows, key, assembly = self._checked(inputs, outputs, start)
        except BatchTooLarge as exc:
            if not self.slices_large_requests:
                raise
            return self._submit_slices(inputs, exc.rows, outputs, done, start, deadline_ns, run_later)
        observer = self.observer
        if observer is None:
            return self._answer_or_queue(batcher, inputs, rows, key, outputs, done, start, deadline_ns, run_later,
                                         assembly)
        observer.begin()
        try:
            return self._answer_or_queue(batcher, inputs, rows, key, outputs, _observed(done, observer, start), start,
                                         deadline_ns, run_later, assembly)
        except BaseException as exc:  # refused: the observer hears of it as of any other end
            observer.end(time.perf_counter_ns() - start, exc)
            raise

    @property
    def slices_large_requests(self) -> bool:
        """Whether a request with more rows than a batch holds runs as slices: when the limit was not set in
        config.yaml. A TF Serving client may send thousands of rows in one request; only a limit the user set is
        a reason to refuse them, as Triton refuses them."""
        return self.max_batch_size > 0 and self.config.max_batch_size is None and self.text is None

    def _submit_slices(self, inputs: Tensors, rows: int, outputs: list[str] | None, done: Done, start: int,
                       deadline_ns: int, run_later: RunLater | None) -> Cancel | None:
        """submit() of a request past the batch limit: checked whole, then its slices submitted one by one, their
        answers joined (runtime.slices). A slice refused (overloaded) refuses the request, its queued slices
        withdrawn."""
        signature = self.signature
        if signature is None or self.state is not State.AVAILABLE:
            raise Unavailable(f"model {self.model!r} version {self.version} is not available ({self.state.value})")
        try:
            check_outputs(signature, outputs)
            check_inputs(signature, inputs, rows)
        except Exception:
            self.stats.request_done(time.perf_counter_ns() - start, False)
            raise
        pieces = row_slices(inputs, rows, self.max_batch_size)
        joined = JoinedAnswer(done, len(pieces))
        cancels: list[Cancel] = []
        try:
            for index, piece in enumerate(pieces):
                cancel = self.submit(piece, outputs, joined.part(index), deadline_ns=deadline_ns, run_later=run_later)
                if cancel is not None:
                    cancels.append(cancel)
        except BaseException:
            joined.abandon()
            for cancel in cancels:
                cancel()
            raise
        if not cancels:
            return None

        def withdraw() -> None:
            for cancel in cancels:
                cancel()

        return withdraw

    def run_now(self, inputs: Tensors, outputs: list[str] | None, *, bulk: bool = False) -> Tensors | None:
        """submit()'s lean path for a caller that waits on its own thread: validated, then run here at once when
        the version is idle and fast, or given a full batch or a `bulk` caller's slice (runtime.batcher's
        run_now), returning the outputs or raising the error.
        None when it is not taken that way (a batch is running or queued, or the version is observed, caches or
        shadows): then submit it."""
        if (self.observer is not None or self.cache is not None or self.shadow is not None
                or carries_encoded_images(self.image, inputs)):
            return None
        start = time.perf_counter_ns()
        try:
            batcher, inputs, rows, _, assembly = self._checked(inputs, outputs, start)
        except BatchTooLarge:
            if self.slices_large_requests:
                return None  # submit() runs it as slices
            raise
        result = batcher.run_now(inputs, rows, start, assembly, bulk=bulk)
        if result is None or not outputs:
            return result
        return {name: result[name] for name in outputs}

    def _checked(self, inputs: Tensors, outputs: list[str] | None, start: int
                 ) -> tuple[Batcher, Tensors, int, Hashable, Assembly | None]:
        """The batcher, the request's inputs as they queue, its rows, batch key and assembly (texts), once the
        version can serve and the request fits its signature; what is wrong is raised (and counted as a failed
        request)."""
        batcher, signature, text = self._batcher, self.signature, self.text
        if batcher is None or signature is None or self.state is not State.AVAILABLE:
            raise Unavailable(f"model {self.model!r} version {self.version} is not available ({self.state.value})")
        try:
            if text is not None and text.takes(inputs):
                check_outputs(text.signature, outputs)
                strings = text.strings(inputs, self.max_batch_size)
                return batcher, strings, len(next(iter(strings.values()))), text, text
            check_outputs(signature, outputs)
            rows, key = check_inputs(signature, inputs, self.max_batch_size)
        except BatchTooLarge:
            if not self.slices_large_requests:  # else run as slices: counted as they end
                self.stats.request_done(time.perf_counter_ns() - start, False)
            raise
        except Exception:
            self.stats.request_done(time.perf_counter_ns() - start, False)
            raise
        return batcher, inputs, rows, key, None

    def _answer_or_queue(self, batcher: Batcher, inputs: Tensors, rows: int, key: Hashable, outputs: list[str] | None,
                         done: Done, start: int, deadline_ns: int, run_later: RunLater | None,
                         assembly: Assembly | None) -> Cancel | None:
        """A checked request: from the cache, or into the batcher (the answer to the cache and the shadow)."""
        cache, shadow = self.cache, self.shadow
        if cache is not None:
            cache_key = request_key(inputs, outputs)
            answer = cache.get(cache_key)
            self.stats.cache_looked_up(answer is not None, time.perf_counter_ns() - start)
            if answer is not None:
                done(answer)
                self.stats.request_done(time.perf_counter_ns() - start, True)
                return None
            done = _then_keep(done, inputs, cache, cache_key, shadow)
        elif shadow is not None:
            done = _then_keep(done, inputs, None, b"", shadow)
        if outputs:
            wanted = outputs

            def pick(result: Tensors | BaseException) -> None:
                done(result if isinstance(result, BaseException) else {name: result[name] for name in wanted})

            return batcher.submit(inputs, rows, key, pick, start, deadline_ns=deadline_ns, run_later=run_later,
                                  assembly=assembly)
        return batcher.submit(inputs, rows, key, done, start, deadline_ns=deadline_ns, run_later=run_later,
                              assembly=assembly)

    async def infer(self, inputs: Tensors, outputs: list[str] | None = None, *, deadline_ns: int = 0,
                    gone: Callable[[], Awaitable[object]] | None = None) -> Tensors:
        """submit() for a coroutine on the event loop: the outputs, or the error raised. What `gone` returns
        completes when the caller has gone (an HTTP client disconnected): a queued request is then withdrawn
        (it is called only for a request that is queued, not for one run at once on the loop).

        The loop offers to run a fast model's batch itself, once the callbacks already due have run (requests
        that came together batch together), as the gRPC thread does. A worker thread would run it beside the loop,
        but a small model's run there costs a GIL hand-over each way: measured on the MLP, session.run took 250 us
        on a worker while the loop parsed HTTP, 37 us on the loop itself (docs/benchmarks.md)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Tensors] = loop.create_future()
        loop_thread = threading.get_ident()

        def done(result: Tensors | BaseException) -> None:
            if threading.get_ident() == loop_thread:
                _settle(future, result)
                return
            # RuntimeError: the loop closed while the batch ran, so nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result)

        cancel = self.submit(inputs, outputs, done, deadline_ns=deadline_ns, run_later=loop.call_soon)
        if cancel is None:  # runs on this loop before anything else it has to do: no caller can leave first
            return await future
        watch = None if gone is None else asyncio.ensure_future(gone())
        if watch is not None:
            watch.add_done_callback(lambda _: cancel())
        try:
            return await future
        except asyncio.CancelledError:
            cancel()
            raise
        finally:
            if watch is not None:
                watch.cancel()


class Observer(Protocol):
    def begin(self) -> None: ...

    def end(self, ns: int, error: BaseException | None) -> None: ...


def _observed(done: Done, observer: Observer, start: int) -> Done:
    def answered(result: Tensors | BaseException) -> None:
        observer.end(time.perf_counter_ns() - start, result if isinstance(result, BaseException) else None)
        done(result)

    return answered


def _then_keep(done: Done, inputs: Tensors, cache: ResponseCache | None, key: bytes, shadow: ShadowLane | None
               ) -> Done:
    """`done`, then, once the caller has its answer, the answer into the cache and a copy to the shadow."""

    def answered(result: Tensors | BaseException) -> None:
        done(result)
        if isinstance(result, BaseException):
            return
        if cache is not None:
            cache.put(key, result)
        if shadow is not None:
            shadow.offer(inputs, result)

    return answered


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
    shadow: ShadowLane | None = None  # copies of answered requests go there (routing.shadow)
    group: VariantGroup | None = None  # set for a variant group: its members answer, as its version 1
    # Why the last rollout changed less than the repository asked (an invalid config.yaml, a version that failed
    # to load) while the versions that served before still serve.
    reload_error: str = ""

    def __post_init__(self) -> None:
        self._split: Split | None = None
        if self.config is not None and self.config.routing.split:
            weights: dict[int, float] = {}
            for ref, weight in self.config.routing.split.items():
                version = self.config.version_of(ref)
                if version is not None:  # the registry checked every entry before it built the model
                    weights[version] = weights.get(version, 0.0) + weight
            self._split = Split(weights)

    def ready_versions(self) -> list[int]:
        if self.group is not None:
            try:
                self.group.resolve(count=False)
            except Unavailable:
                return []
            return [1]
        return sorted(v for v, served in self.versions.items() if served.ready)

    def is_ready(self, version: int | None = None) -> bool:
        """Whether the version (any version, when None) can serve now."""
        if version is None or self.group is not None:
            return version in (None, 1) and bool(self.ready_versions())
        served = self.versions.get(version)
        return served is not None and served.ready

    def _group_version(self, version: int | None, label: str | None) -> VariantGroup:
        """The group, once the request names no more than its one version."""
        assert self.group is not None
        if label is not None:
            raise NotFound(f"model {self.name!r} is a variant group: it has no version labels")
        if version not in (None, 1):
            raise NotFound(f"model {self.name!r} is a variant group: it serves version 1 only")
        return self.group

    def _labelled(self, label: str) -> int:
        labels = self.config.labels if self.config is not None else {}
        if label not in labels:
            raise NotFound(f"model {self.name!r} has no version label {label!r}")
        return labels[label]

    def resolve(self, version: int | None = None, label: str | None = None, key: str | None = None
                ) -> ServedVersion:
        """Route to a version: an explicit one, a label's, the traffic split's (by `key` when given), or the
        newest available (TF Serving's default)."""
        if self.error:
            raise Unavailable(f"model {self.name!r} failed to load: {self.error}")
        if self.group is not None:
            return self._group_version(version, label).resolve()
        if label is not None:
            version = self._labelled(label)
        elif version is None and self._split is not None:
            for candidate in self._split.choose(key):
                served = self.versions.get(candidate)
                if served is not None and served.ready:
                    return served
        if version is None:
            available = [v for v, served in self.versions.items() if served.ready]
            if not available:
                why = "; ".join(f"version {v}: {served.error or served.state.value}"
                                for v, served in sorted(self.versions.items()))
                raise Unavailable(f"model {self.name!r} has no available version" + (f" ({why})" if why else ""))
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
        if self.group is not None:
            return [self._group_version(version, label).resolve(count=False)]
        if label is not None:
            version = self._labelled(label)
        if version is None:
            return [self.versions[v] for v in sorted(self.versions)]
        if version not in self.versions:
            raise NotFound(f"model {self.name!r} has no served version {version}")
        return [self.versions[version]]

    def stop(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        for served in self.versions.values():
            served.stop()
