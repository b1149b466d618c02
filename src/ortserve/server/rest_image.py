"""Image classification over HTTP: a multipart upload in, the top labels out."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import parse_qs

from python_multipart.multipart import MultipartParser, parse_options_header

from ortserve.digits import is_decimal
from ortserve.errors import InvalidInput
from ortserve.runtime.model import ServedVersion
from ortserve.server.dataplane import DataPlane, parse_version
from ortserve.server.http import Request, Response, Router, json_response
from ortserve.server.rest_tfserving import MODEL_PATH

DEFAULT_TOP_K = 5


class _FormCollector:
    """Callbacks for python-multipart's parser that keep each part's name and bytes."""

    def __init__(self) -> None:
        self.fields: dict[str, bytes] = {}
        self._header = self._value = self._name = b""
        self._data: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value", "on_header_end")}

    def on_part_begin(self) -> None:
        self._name, self._data = b"", []

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._name = parse_options_header(self._value)[1].get(b"name", b"")
        self._header = self._value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data.append(data[start:end])

    def on_part_end(self) -> None:
        self.fields[self._name.decode(errors="replace")] = b"".join(self._data)


def parse_form(request: Request) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    content_type, options = parse_options_header(request.headers.get(b"content-type", b""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput("send the image as multipart/form-data with a field named 'image'")
    collector = _FormCollector()
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        parser.write(request.body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own error types for malformed bodies
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    return collector.fields


def _top_k(request: Request, fields: dict[str, bytes], classes: int | None) -> int:
    """top_k from the form or the query string; `classes` bounds it when the output's size is fixed."""
    raw = fields.get("top_k")
    if raw is None:
        values = parse_qs(request.query.decode(errors="replace")).get("top_k")
        raw = values[-1].encode() if values else None
    if raw is None:
        return min(DEFAULT_TOP_K, classes or DEFAULT_TOP_K)
    text = raw.decode(errors="replace").strip()
    if not is_decimal(text) or int(text) < 1 or (classes is not None and int(text) > classes):
        bound = f"from 1 to {classes}" if classes is not None else "of at least 1"
        raise InvalidInput(f"top_k must be an integer {bound}, got {text!r}")
    return int(text)


class ImageRest:
    def __init__(self, plane: DataPlane, preprocess_threads: int = 2) -> None:
        self._plane = plane
        # Pillow releases the GIL while decoding and resizing: threads keep the event loop free.
        self._pool = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="ortserve-image")

    def routes(self, router: Router) -> None:
        router.add("POST", "/predict", self.predict_default)
        router.add("POST", MODEL_PATH + ":predict_image", self.predict_named)

    async def predict_default(self, request: Request, params: dict[str, str]) -> Response:
        served = self._plane.version(self._plane.default_image_model(), routing_key=request.routing_key)
        return await self._classify(request, served)

    async def predict_named(self, request: Request, params: dict[str, str]) -> Response:
        served = self._plane.version(params["model"], parse_version(params.get("version")), params.get("label"),
                                     request.routing_key)
        return await self._classify(request, served)

    async def _classify(self, request: Request, served: ServedVersion) -> Response:
        classifier = served.image
        if classifier is None:
            raise InvalidInput(f"model {served.model!r} has no image preprocessing (config.yaml `image:`)")
        fields = parse_form(request)
        if "image" not in fields:
            raise InvalidInput("the form has no field named 'image'")
        classes = classifier.output.shape[-1]
        top_k = _top_k(request, fields, classes if classes > 0 else None)
        served.precheck()
        start = time.perf_counter()
        tensor = await asyncio.get_running_loop().run_in_executor(self._pool, classifier.preprocess, fields["image"])
        preprocessed = time.perf_counter()
        outputs = await served.infer({classifier.input.name: tensor}, [classifier.output.name],
                                     gone=request.disconnected)
        inferred = time.perf_counter()
        return json_response({
            "model": served.model,
            "version": str(served.version),
            "predictions": classifier.top_k(outputs[classifier.output.name][0], top_k),
            "inference_time_ms": round((inferred - preprocessed) * 1000, 3),
            "preprocess_time_ms": round((preprocessed - start) * 1000, 3),
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        })
