"""`ortserve.Engine`: a model repository served in process, through the same core as the server (registry,
versions, routing, batcher, scheduler, admission), with none of the HTTP or gRPC stack.

Calls come from the caller's own threads. A request is validated and queued on the calling thread; a fast
model's batch then runs on that thread too, merged with whatever other threads queued meanwhile (the batcher's
run-here path, as the gRPC thread uses it), and a slower model's batch runs on the version's worker threads,
which merge the requests of every caller. Loads, rollouts and drains run on a private event loop thread.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import yaml
from PIL import Image

from ortserve.errors import InvalidInput, NotFound
from ortserve.repository.config import CONFIG_FILE, parse_config
from ortserve.repository.layout import MODEL_FILE
from ortserve.runtime.batcher import split_rows
from ortserve.runtime.model import ServedModel, ServedVersion
from ortserve.runtime.registry import ModelRegistry

Tensors = dict[str, np.ndarray]
Inputs = dict[str, np.ndarray] | np.ndarray
ImageSource = str | Path | bytes | Image.Image | np.ndarray
Result = TypeVar("Result")


class _Answer:
    """Where one request's outputs or error arrive, from whichever thread ran its batch. A lock held from the start
    and released by the answer: cheaper to make than an Event, and a batch run on the caller's own thread (the
    usual case for a fast model) has released it before wait() is called."""

    __slots__ = ("_arrived", "_result")

    def __init__(self) -> None:
        self._arrived = threading.Lock()
        self._arrived.acquire()
        self._result: Tensors | BaseException | None = None

    def __call__(self, result: Tensors | BaseException) -> None:
        self._result = result
        self._arrived.release()

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
        scratch = Path(tempfile.mkdtemp(prefix="ortserve-engine-"))
        version_dir = scratch / model / "1"
        version_dir.mkdir(parents=True)
        (version_dir / MODEL_FILE).symlink_to(source.resolve())
        if config:
            (scratch / model / CONFIG_FILE).write_text(yaml.safe_dump(config))
        try:
            engine = cls(scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        engine._scratch = scratch
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
        answer, later = _Answer(), _RunHere()
        served.submit(_named(served, inputs), outputs, answer, run_later=later.append)
        later.run()
        return answer.wait()

    def predict_batch(self, model: str, inputs: Sequence[Inputs], *, version: int | None = None,
                      label: str | None = None, outputs: list[str] | None = None) -> list[Tensors]:
        """Many requests as batches of up to the version's max_batch_size rows; results in order. Consecutive
        requests of one shape are stacked once and run in slices (views), so a request's rows may share a
        batch with its neighbours' (rows are independent along the batch dimension)."""
        served = self._version(model, version, label, None)
        requests = [_named(served, item) for item in inputs]
        if served.max_batch_size <= 0:  # unbatched: one by one
            return [self.predict(model, item, version=served.version, outputs=outputs) for item in requests]
        results: list[Tensors] = []
        for run in _same_shape_runs(requests):
            stacked = run[0] if len(run) == 1 else {name: np.concatenate([r[name] for r in run]) for name in run[0]}
            answer = self._slices(served, stacked, outputs)
            results.extend(split_rows(answer, [_rows(request) for request in run]))
        return results

    def _slices(self, served: ServedVersion, stacked: Tensors, outputs: list[str] | None) -> Tensors:
        """Run `stacked` in slices of max_batch_size rows, keeping as many slices in flight as the version has
        instances (the rest wait here, not in its queue, where admission would count them)."""
        limit, total = served.max_batch_size, _rows(stacked)
        if total <= limit:
            answer, later = _Answer(), _RunHere()
            served.submit(stacked, outputs, answer, run_later=later.append)
            later.run()
            return answer.wait()
        in_flight = max(1, served.config.instances.max)
        pending: list[_Answer] = []
        parts: list[Tensors] = []
        for start in range(0, total, limit):
            if len(pending) >= in_flight:
                parts.append(pending.pop(0).wait())
            answer, later = _Answer(), _RunHere()
            served.submit({name: array[start:start + limit] for name, array in stacked.items()}, outputs, answer,
                          run_later=later.append)
            later.run()
            pending.append(answer)
        parts.extend(answer.wait() for answer in pending)
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def predict_concurrent(self, model: str, inputs: Sequence[Inputs], *, max_workers: int = 8,
                           version: int | None = None, label: str | None = None,
                           outputs: list[str] | None = None) -> list[Tensors]:
        """Many requests from `max_workers` threads at once, sharing the version's batcher as concurrent callers
        do: each thread takes its share of consecutive requests as predict_batch does; results in order."""
        if not inputs:
            return []
        workers = max(1, min(max_workers, len(inputs)))
        share = -(-len(inputs) // workers)
        shares = [inputs[start:start + share] for start in range(0, len(inputs), share)]

        def one(part: Sequence[Inputs]) -> list[Tensors]:
            return self.predict_batch(model, part, version=version, label=label, outputs=outputs)

        with ThreadPoolExecutor(workers, thread_name_prefix="ortserve-predict") as pool:
            return [answer for part in pool.map(one, shares) for answer in part]

    async def predict_async(self, model: str, inputs: Inputs, *, version: int | None = None,
                            label: str | None = None, outputs: list[str] | None = None,
                            routing_key: str | None = None) -> Tensors:
        """predict() for a coroutine: the caller's event loop waits, never blocks."""
        served = self._version(model, version, label, routing_key)
        return await served.infer(_named(served, inputs), outputs)

    def classify(self, model: str, image: ImageSource, *, top_k: int = 5, version: int | None = None,
                 label: str | None = None) -> list[dict[str, object]]:
        """The top classes of an image model (config.yaml `image:`) for an image file path, encoded bytes, a PIL
        image, or an RGB array (height x width x 3, uint8)."""
        served = self._version(model, version, label, None)
        classifier = served.image
        if classifier is None:
            raise InvalidInput(f"model {model!r} has no image preprocessing (config.yaml `image:`)")
        if top_k < 1:
            raise InvalidInput(f"top_k must be at least 1, got {top_k}")
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
        return inputs
    if not isinstance(inputs, np.ndarray):
        raise InvalidInput(f"inputs must be a dict of arrays by input name, or one array; got {type(inputs).__name__}")
    assert served.signature is not None
    names = [spec.name for spec in served.signature.inputs]
    if len(names) != 1:
        raise InvalidInput(f"model {served.model!r} has {len(names)} inputs {names}: pass a dict of arrays by name")
    return {names[0]: inputs}


def _rows(request: Tensors) -> int:
    return next(iter(request.values())).shape[0]


def _same_shape_runs(requests: list[Tensors]) -> list[list[Tensors]]:
    """Consecutive requests with the same inputs, dtypes and shapes but the first dimension."""
    runs: list[list[Tensors]] = []
    shape = None
    for request in requests:
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
        return prepare(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidInput(f"an image array must be height x width x 3 of uint8 (RGB), got {image.shape} "
                               f"{image.dtype}")
        return prepare(Image.fromarray(image))
    raise InvalidInput(f"an image is a path, bytes, a PIL image or an RGB array, not {type(image).__name__}")

