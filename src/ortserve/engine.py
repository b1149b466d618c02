"""`ortserve.Engine`: a model repository served in process, through the same core as the server (registry,
versions, routing, batcher, scheduler, admission), with none of the HTTP or gRPC stack.

Calls come from the caller's own threads. A request is validated and queued on the calling thread; a fast
model's batch then runs on that thread too, merged with whatever other threads queued meanwhile (the batcher's
run-here path, as the gRPC thread uses it), and a slower model's batch runs on the version's worker threads,
which merge the requests of every caller. Loads, rollouts and drains run on a private event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import shutil
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from PIL import Image

from ortserve.errors import InvalidInput, NotFound
from ortserve.repository.config import parse_config
from ortserve.repository.layout import MODEL_FILE
from ortserve.repository.single import single_model_repository
from ortserve.runtime import staging
from ortserve.runtime.batcher import has_rows, split_rows
from ortserve.runtime.model import ServedModel, ServedVersion
from ortserve.runtime.pixels import to_rgb
from ortserve.runtime.registry import ModelRegistry

Tensors = dict[str, np.ndarray]
Inputs = dict[str, np.ndarray] | np.ndarray
ImageSource = str | Path | bytes | Image.Image | np.ndarray
Result = TypeVar("Result")
_DTYPE = operator.attrgetter("dtype")


class _Answer:
    """Where one request's outputs or error arrive, from whichever thread ran its batch. A lock held from the start
    and released by the answer: cheaper to make than an Event, and a batch run on the caller's own thread (the
    usual case for a fast model) has released it before wait() is called."""

    __slots__ = ("_arrived", "_result", "_then")

    def __init__(self, then: Callable[[], object] | None = None) -> None:
        self._arrived = threading.Lock()
        self._arrived.acquire()
        self._result: Tensors | BaseException | None = None
        self._then = then  # called once the answer is in

    def __call__(self, result: Tensors | BaseException) -> None:
        self._result = result
        self._arrived.release()
        if self._then is not None:
            self._then()

    @classmethod
    def given(cls, result: Tensors) -> _Answer:
        answer = cls()
        answer(result)
        return answer

    @property
    def arrived(self) -> bool:
        return not self._arrived.locked()

    def wait(self) -> Tensors:
        self._arrived.acquire()
        result = self._result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result


class Engine:
    """Serve the repository at `repository` (REPO/<model>/<version>/model.onnx, with config.yaml) in process.

    `model_control`: `none` (default) loads once; `poll` follows the repository every `poll_interval_s` seconds,
    with the server's rollouts. Use as a context manager, or call close()."""

    def __init__(self, repository: str | Path, *, model_control: Literal["none", "poll"] = "none",
                 poll_interval_s: float = 2.0) -> None:
        self._scratch: Path | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ortserve-engine", daemon=True)
        self._thread.start()
        self._registry = ModelRegistry(Path(repository))
        self._watch: asyncio.Future[None] | None = None
        self._closed = False
        try:
            self._on_loop(self._registry.load_all())
        except BaseException:
            self._stop_loop()
            raise
        if model_control == "poll":
            self._watch = asyncio.run_coroutine_threadsafe(self._registry.watch(poll_interval_s),  # type: ignore
                                                           self._loop)

    @classmethod
    def from_file(cls, path: str | Path, *, name: str | None = None, **config: Any) -> Engine:
        """Serve one .onnx file as model `name` (default: the file's stem), with config.yaml fields as keyword
        arguments (`max_batch_size=16`, `instances=2`, ...), checked as the server checks them."""
        source = Path(path)
        if not source.is_file():
            raise NotFound(f"no model file at {str(source)!r}")
        model = name or source.stem
        parse_config(model, config)  # the same errors a config.yaml gets, before anything is written
        scratch = single_model_repository(source, model, config)
        version_dir = scratch / model / "1"
        try:
            engine = cls(scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        engine._scratch = scratch
        loaded = engine.model(model)
        if not loaded.is_ready():  # the one model is the whole engine: its failure is the caller's answer
            failure = (loaded.error or loaded.reload_error
                       or "; ".join(version.error for version in loaded.versions.values() if version.error))
            engine.close()
            failure = failure.replace(str(version_dir / MODEL_FILE), str(source))  # the caller's file, not our link
            raise InvalidInput(f"failed to load model {model!r}: {failure or 'no version is ready'}")
        return engine

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def models(self) -> list[str]:
        return sorted(self._registry.models)

    def model(self, name: str) -> ServedModel:
        """The served model: its versions, signatures (`.resolve().signature`), statistics."""
        return self._registry.get(name)

    def load(self, name: str) -> None:
        """Roll a model out from the repository as it is now (a rollout, as the server's load API)."""
        model = self._on_loop(self._registry.load(name))
        if model.error or model.reload_error:
            raise InvalidInput(f"failed to load model {name!r}: {model.error or model.reload_error}")

    def predict(self, model: str, inputs: Inputs, *, version: int | None = None, label: str | None = None,
                outputs: list[str] | None = None, routing_key: str | None = None) -> Tensors:
        """One request: `inputs` by name (or one array for a model with one input), rows along the first
        dimension; the outputs by name (those asked for, or all)."""
        served = self._version(model, version, label, routing_key)
        named = _named(served, inputs)
        if served.slices_large_requests and _past_the_batch_limit(named, served.max_batch_size):
            # as predict_batch runs it: slices pipelined from this thread, not queued one by one (1,000 MLP rows:
            # 1.08-1.23x as fast, docs/benchmarks.md)
            return self._slices(served, named, _output_names(outputs), _slots(served))
        return self._one(served, named, _output_names(outputs))

    def predict_batch(self, model: str, inputs: Sequence[Inputs], *, version: int | None = None,
                      label: str | None = None, outputs: list[str] | None = None) -> list[Tensors]:
        """Many requests as batches of up to the version's max_batch_size rows; results in order. Requests of
        one shape are stacked once and run in slices (views), so a request's rows may share a batch with its
        neighbours' (rows are independent along the batch dimension)."""
        served = self._version(model, version, label, None)
        return self._batch(served, _requests(inputs), _output_names(outputs), _slots(served))

    def predict_concurrent(self, model: str, inputs: Sequence[Inputs], *, max_workers: int = 8,
                           version: int | None = None, label: str | None = None,
                           outputs: list[str] | None = None) -> list[Tensors]:
        """Many requests from `max_workers` threads at once, sharing the version's batcher as concurrent callers
        do: each thread takes its share of consecutive requests as predict_batch does, and the threads together
        keep no more slices in flight than predict_batch alone would; results in order."""
        if not _requests(inputs):
            return []
        served, outputs = self._version(model, version, label, None), _output_names(outputs)
        slots = _slots(served)
        workers = max(1, min(max_workers, len(inputs)))
        share = -(-len(inputs) // workers)
        shares = [inputs[start:start + share] for start in range(0, len(inputs), share)]
        with ThreadPoolExecutor(workers, thread_name_prefix="ortserve-predict") as pool:
            answered = pool.map(lambda part: self._batch(served, part, outputs, slots), shares)
            return [answer for part in answered for answer in part]

    def _batch(self, served: ServedVersion, inputs: Sequence[Inputs], outputs: list[str] | None,
               slots: threading.Semaphore) -> list[Tensors]:
        if served.max_batch_size <= 0:  # unbatched: one by one
            return [self._one(served, _named(served, item), outputs, slots=slots) for item in inputs]
        uniform = _uniform_columns(served, inputs, served.max_batch_size)
        if uniform is not None:  # the usual case, done in numpy: every request of one shape and dtype
            columns, rows = uniform
            return self._uniform(served, inputs, columns, rows, outputs, slots)
        return self._mixed(served, inputs, outputs, slots)

    def _mixed(self, served: ServedVersion, inputs: Sequence[Inputs], outputs: list[str] | None,
               slots: threading.Semaphore) -> list[Tensors]:
        """Requests of several shapes or dtypes: each run of consecutive requests alike stacked and run as one."""
        results: list[Tensors] = []
        for run in _same_shape_runs([_named(served, item) for item in inputs]):
            if len(run) == 1:
                results.append(self._slices(served, run[0], outputs, slots))
                continue
            stacked = {name: np.concatenate([r[name] for r in run]) for name in run[0]}
            answer = self._slices(served, stacked, outputs, slots)
            if has_rows(answer, _rows(stacked)):
                results.extend(split_rows(answer, [_rows(request) for request in run]))
            else:  # outputs with no row per input row (config.yaml batches a model that does not batch)
                results.extend(self._one(served, request, outputs, slots=slots) for request in run)
        return results

    def _uniform(self, served: ServedVersion, inputs: Sequence[Inputs], columns: dict[str, list[np.ndarray]],
                 rows: int, outputs: list[str] | None, slots: threading.Semaphore) -> list[Tensors]:
        """Requests of `rows` rows each: a slice of max_batch_size rows at a time stacked into this thread's
        staging buffers (runtime.staging), run, and its outputs split back into its requests' views. Stacking
        checks that the requests agree past the first dimension and in dtype (numpy's concatenate, casting
        nothing); from a slice where they do not, the rest run as _mixed does. The slices run one after the
        other: a buffer is reused as soon as its slice has run (stacking into fresh arrays costs more than the
        overlap of stacking with the run it would buy, measured on 2 cores)."""
        per_slice = max(served.max_batch_size // max(rows, 1), 1)
        stack = _stack_fresh if served.shadow is not None else staging.stack  # a shadow keeps the inputs it copies
        results: list[Tensors] = []
        count = len(inputs)
        for start in range(0, count, per_slice):
            requests = min(per_slice, count - start)
            try:
                piece = {name: column[start] if requests == 1 else stack(name, column[start:start + requests],
                                                                          requests * rows)
                         for name, column in columns.items()}
            except (ValueError, TypeError):  # shapes past the first dimension or dtypes differ
                return results + self._mixed(served, inputs[start:], outputs, slots)
            answer = self._one(served, piece, outputs, slots=slots)
            if requests == 1:
                results.append(answer)
            elif has_rows(answer, requests * rows):
                results.extend(_split_uniform(answer, requests, rows))
            else:  # outputs with no row per input row (config.yaml batches a model that does not batch)
                results.extend(self._one(served, {name: column[start + index] for name, column in columns.items()},
                                         outputs, slots=slots) for index in range(requests))
        return results

    @staticmethod
    def _one(served: ServedVersion, inputs: Tensors, outputs: list[str] | None, *,
             slots: threading.Semaphore | None = None) -> Tensors:
        """One request: run here at once when the version is idle and the request has nothing worth waiting for
        (fast, a full batch, or a slice of a bulk call: the batcher's run_now), else queued, and run on this
        thread if the version is free by then (the batcher's run-here path). `slots`: a bulk call's, held while
        the slice is queued or running, so that the call's threads together keep no more slices in the version's
        queue than it has instances and one more (a slow model's queue bound is two batches)."""
        ran = served.run_now(inputs, outputs, bulk=slots is not None)
        if ran is not None:
            return ran
        with slots if slots is not None else contextlib.nullcontext():
            answer, later = _Answer(), _RunHere()
            served.submit(inputs, outputs, answer, run_later=later.append)
            later.run()
            return answer.wait()

    def _slices(self, served: ServedVersion, stacked: Tensors, outputs: list[str] | None,
                slots: threading.Semaphore) -> Tensors:
        """Run `stacked` in slices (views) of max_batch_size rows; the outputs stacked back."""
        limit, total = served.max_batch_size, _rows(stacked)
        if total <= limit:
            return self._one(served, stacked, outputs, slots=slots)
        slices = ({name: array[start:start + limit] for name, array in stacked.items()}
                  for start in range(0, total, limit))
        parts = [answer.wait() for answer in self._pipelined(served, slices, outputs, slots)]
        for start, part in zip(range(0, total, limit), parts, strict=True):
            if not has_rows(part, min(limit, total - start)):
                raise InvalidInput(f"a request of {total} rows runs in batches of max_batch_size {limit} rows, but "
                                   f"model {served.model!r} answers a batch with no row per input row in its "
                                   "outputs, so they cannot be joined: send at most max_batch_size rows")
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    @staticmethod
    def _pipelined(served: ServedVersion, slices: Iterator[Tensors], outputs: list[str] | None,
                   slots: threading.Semaphore) -> list[_Answer]:
        """Run the slices: here, when the version is idle (run_now: a bulk call's slice waits for nothing), else queued,
        one slot each (the rest wait here, not in the version's queue, where admission would count them). With a
        slot more than the version has instances, the next slice is queued while one runs, so the version's worker
        runs them back to back while this thread prepares the next; the answers are waited for in order."""
        pending: list[_Answer] = []
        for piece in slices:
            ran = served.run_now(piece, outputs, bulk=True) if not pending or pending[-1].arrived else None
            if ran is not None:  # the version was idle: this thread ran the slice, with no hand-over
                pending.append(_Answer.given(ran))
                continue
            slots.acquire()
            answer = _Answer(then=slots.release)
            try:
                served.submit(piece, outputs, answer)
            except BaseException:
                slots.release()
                raise
            pending.append(answer)
        return pending

    async def predict_async(self, model: str, inputs: Inputs, *, version: int | None = None,
                            label: str | None = None, outputs: list[str] | None = None,
                            routing_key: str | None = None) -> Tensors:
        """predict() for a coroutine: the caller's event loop waits, never blocks."""
        served = self._version(model, version, label, routing_key)
        return await served.infer(_named(served, inputs), _output_names(outputs))

    def classify(self, model: str, image: ImageSource, *, top_k: int = 5, version: int | None = None,
                 label: str | None = None) -> list[dict[str, object]]:
        """The top classes of an image model (config.yaml `image:`) for an image file path, encoded bytes, a PIL
        image, or an RGB array (height x width x 3, uint8)."""
        served = self._version(model, version, label, None)
        classifier = served.image
        if classifier is None:
            raise InvalidInput(f"model {model!r} has no image preprocessing (config.yaml `image:`)")
        if not isinstance(top_k, int) or top_k < 1:
            raise InvalidInput(f"top_k must be a whole number of at least 1, got {top_k!r}")
        tensor = _image_tensor(classifier.preprocess, classifier.tensor, image)
        scores = self.predict(model, {classifier.input.name: tensor}, version=served.version,
                              outputs=[classifier.output.name])[classifier.output.name]
        return classifier.top_k(scores[0], top_k)

    def close(self, drain_timeout_s: float = 30.0) -> None:
        """Answer what is queued and running (refusing what is left after `drain_timeout_s`), then stop."""
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
        try:
            self._on_loop(self._registry.drain(drain_timeout_s))
            self._registry.stop()  # and the shadow lanes
        finally:
            self._stop_loop()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)

    def _version(self, model: str, version: int | None, label: str | None, key: str | None) -> ServedVersion:
        if self._closed:
            raise InvalidInput("the engine is closed")
        return self._registry.get(model).resolve(version, label, key)

    def _on_loop(self, work: Coroutine[Any, Any, Result]) -> Result:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _RunHere(list[Callable[[], None]]):
    """What the batcher hands back to run on the calling thread (its run-here path), run right after submit."""

    def run(self) -> None:
        for work in self:
            work()


def _named(served: ServedVersion, inputs: Inputs) -> Tensors:
    if isinstance(inputs, dict):
        for name, array in inputs.items():
            if not isinstance(array, np.ndarray):
                raise InvalidInput(f"input {name!r} must be a numpy array, got {type(array).__name__}")
        return inputs
    if not isinstance(inputs, np.ndarray):
        raise InvalidInput(f"inputs must be a dict of arrays by input name, or one array; got {type(inputs).__name__}")
    assert served.interface is not None
    names = [spec.name for spec in served.interface.inputs]
    if len(names) != 1:
        raise InvalidInput(f"model {served.model!r} has {len(names)} inputs {names}: pass a dict of arrays by name")
    return {names[0]: inputs}


def _requests(inputs: Sequence[Inputs]) -> Sequence[Inputs]:
    """A bulk call's requests: a list (or other sequence) of them, each what predict() takes."""
    if isinstance(inputs, str | bytes | dict | np.ndarray) or not isinstance(inputs, Sequence):
        raise InvalidInput(f"inputs must be a list of requests (each a dict of arrays by input name, or one array), "
                           f"got {type(inputs).__name__}; predict() takes one array of many rows")
    return inputs


def _output_names(outputs: list[str] | None) -> list[str] | None:
    if outputs is not None and (isinstance(outputs, str) or not isinstance(outputs, Sequence)
                                or not all(isinstance(name, str) for name in outputs)):
        raise InvalidInput(f"outputs must be a list of output names, got {outputs!r:.100}")
    return outputs


def _slots(served: ServedVersion) -> threading.Semaphore:
    """Slices a bulk call keeps in flight: one per instance, and one queued behind them."""
    return threading.Semaphore(served.config.instances.max + 1)


def _rows(request: Tensors) -> int:
    return next(iter(request.values())).shape[0]


def _past_the_batch_limit(request: Tensors, limit: int) -> bool:
    """Whether every input has the same rows, more than `limit`; a request whose inputs disagree is left to the
    core's checks, which name the problem."""
    rows = {array.shape[0] if array.ndim else -1 for array in request.values()}
    return len(rows) == 1 and rows.pop() > limit


def _uniform_columns(served: ServedVersion, inputs: Sequence[Inputs], limit: int
                     ) -> tuple[dict[str, list[np.ndarray]], int] | None:
    """Each input's arrays over the requests, and the rows of each request, when every request has the same
    rows per input and no more than `limit` (checked over the whole list at C speed); None otherwise. The rest
    of their shapes and their dtypes are checked as they are stacked (_uniform), but for strings, whose stacking
    would widen a shorter string dtype."""
    if not inputs:
        return None
    first = inputs[0]
    if isinstance(first, np.ndarray):
        if set(map(type, inputs)) != {np.ndarray}:
            return None
        columns = {_named(served, first).popitem()[0]: list(inputs)}  # type: ignore[arg-type]
    elif isinstance(first, dict):
        if set(map(type, inputs)) != {dict} or len(set(map(len, inputs))) != 1:  # type: ignore[arg-type]
            return None
        try:
            columns = {name: [item[name] for item in inputs] for name in first}  # type: ignore[index]
        except KeyError:
            return None
        if any(set(map(type, column)) != {np.ndarray} for column in columns.values()):
            return None
    else:
        return None
    for column in columns.values():
        try:
            lengths = set(map(len, column))
        except TypeError:  # a scalar has no rows
            return None
        if len(lengths) != 1 or (column[0].dtype.kind not in staging.REUSABLE_KINDS
                                 and len(set(map(_DTYPE, column))) != 1):
            return None
    rows = len(next(iter(columns.values()))[0])
    return (columns, rows) if rows <= limit else None


def _stack_fresh(_: str, arrays: list[np.ndarray], __: int) -> np.ndarray:
    return np.concatenate(arrays, casting="no")


def _split_uniform(outputs: Tensors, requests: int, rows: int) -> list[Tensors]:
    """Each request's `rows` rows of every output, as views (numpy iterates; no Python loop per element)."""
    names = list(outputs)
    parts = [list(outputs[name].reshape(requests, rows, *outputs[name].shape[1:])) for name in names]
    if len(names) == 1:
        name = names[0]
        return [{name: part} for part in parts[0]]
    return [dict(zip(names, row, strict=True)) for row in zip(*parts, strict=True)]


def _same_shape_runs(requests: list[Tensors]) -> list[list[Tensors]]:
    """Consecutive requests with the same inputs, dtypes and shapes but the first dimension (which each must have)."""
    runs: list[list[Tensors]] = []
    shape = None
    for request in requests:
        for name, array in request.items():
            if array.ndim == 0:
                raise InvalidInput(f"input {name!r} has shape [] (a scalar), but the model takes a batch along the "
                                   "first dimension")
        key = [(name, array.dtype, array.shape[1:]) for name, array in request.items()]
        if runs and key == shape:
            runs[-1].append(request)
        else:
            runs.append([request])
            shape = key
    return runs


def _image_tensor(decode: Callable[[bytes], np.ndarray], prepare: Callable[[Image.Image], np.ndarray],
                  image: ImageSource) -> np.ndarray:
    if isinstance(image, bytes):
        return decode(image)
    if isinstance(image, str | Path):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read the image {str(image)!r}: {exc.strerror or exc}") from None
        return decode(data)
    if isinstance(image, Image.Image):
        return prepare(to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidInput(f"an image array must be height x width x 3 of uint8 (RGB), got {image.shape} "
                               f"{image.dtype}")
        return prepare(Image.fromarray(image))
    raise InvalidInput(f"an image is a path, bytes, a PIL image or an RGB array, not {type(image).__name__}")

