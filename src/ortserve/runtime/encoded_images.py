"""Encoded images in tensor requests: for a model with image preprocessing (config.yaml `image:`), its image input
also takes one encoded image (JPEG, PNG, ...) per row as bytes, the way TF Serving clients send images (`{"b64":
...}` instances, a DT_STRING tensor), decoded, resized and normalized as `POST /predict` does.

Decoding costs milliseconds an image, so it runs on a small pool of its own, never on the thread that received
the request (the event loop, the gRPC thread); the decoded request is then submitted as any other."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ortserve.errors import InvalidInput
from ortserve.runtime.cores import usable_cores
from ortserve.runtime.image import ImageClassifier

Tensors = dict[str, np.ndarray]
Cancel = Callable[[], None]
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def carries_encoded_images(image: ImageClassifier | None, inputs: Tensors) -> bool:
    """Whether the request gives the image input as bytes (objects) rather than pixels."""
    if image is None:
        return False
    array = inputs.get(image.input.name)
    return array is not None and array.dtype == object


def decoded(image: ImageClassifier, inputs: Tensors) -> Tensors:
    """The inputs with the encoded images, one per row ([rows] or [rows, 1]), replaced by the image input's
    tensor. Blocking."""
    name = image.input.name
    encoded = inputs[name]
    if encoded.ndim == 0 or encoded.ndim > 2 or (encoded.ndim == 2 and encoded.shape[1] != 1):
        raise InvalidInput(f"input {name!r}: encoded images come one per row (shape [rows] or [rows, 1]), got "
                           f"shape {list(encoded.shape)}")
    if encoded.size == 0:
        raise InvalidInput(f"input {name!r}: no image was given")
    rows = []
    for item in encoded.reshape(-1):
        if not isinstance(item, bytes):
            raise InvalidInput(f"input {name!r} takes images' bytes (base64 in JSON: {{\"b64\": \"...\"}}), got "
                               f"{type(item).__name__}")
        rows.append(image.preprocess(item))
    return {**inputs, name: np.concatenate(rows)}


def decode_then(job: Callable[[], Cancel | None], refuse: Callable[[BaseException], None]) -> Cancel:
    """Run `job` (decode, then submit) on the decoding pool; what it raises is `refuse`d. The callable returned
    withdraws the request: before it is decoded, or once it is queued."""
    lock = threading.Lock()
    state: dict[str, object] = {"gone": False, "cancel": None}

    def run() -> None:
        with lock:
            if state["gone"]:
                return
        try:
            cancel = job()
        except Exception as exc:  # the caller's answer, as it is: a bad image, a refusal, or a fault (500)
            refuse(exc)
            return
        with lock:
            gone = state["gone"]
            state["cancel"] = cancel
        if gone and cancel is not None:
            cancel()

    def withdraw() -> None:
        with lock:
            state["gone"] = True
            cancel = state["cancel"]
        if callable(cancel):
            cancel()

    _decoding_pool().submit(run)
    return withdraw


def _decoding_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="ortserve-decode")
        return _pool
