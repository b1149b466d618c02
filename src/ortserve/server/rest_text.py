"""Text models over HTTP: a JSON list of strings in, embeddings, the top labels or the entities of each text
out; or lists of questions and their contexts in, the answers out."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson

from ortserve.errors import InvalidInput, require
from ortserve.runtime.model import ServedVersion
from ortserve.runtime.scores import ranked
from ortserve.runtime.text import ANSWER, EMBEDDINGS, END, ENTITIES, SCORE, SCORES, START
from ortserve.server.codec import dumps, loads
from ortserve.server.dataplane import DataPlane, parse_version
from ortserve.server.http import Request, Response, Router
from ortserve.server.rest_tfserving import MODEL_PATH

DEFAULT_TOP_K = 5


def _texts(document: Any, key: str = "texts") -> np.ndarray:
    require(isinstance(document, dict), f'the request body must be a JSON object: {{"{key}": ["...", ...]}}')
    texts = document.get(key)
    require(texts is not None, f"the body has no '{key}': send {{\"{key}\": [\"...\", ...]}}")
    require(isinstance(texts, list), f"'{key}' must be a list of strings, got {type(texts).__name__}")
    require(len(texts) > 0, f"'{key}' is empty: send at least one text")
    for index, text in enumerate(texts):
        require(isinstance(text, str), f"{key}[{index}] is a {type(text).__name__}, not a string")
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return array


def _top_k(document: dict[str, Any], classes: int) -> int:
    value = document.get("top_k", min(DEFAULT_TOP_K, classes))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= classes:
        raise InvalidInput(f"top_k must be an integer from 1 to {classes}, got {value!r}")
    return value


class TextRest:
    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def routes(self, router: Router) -> None:
        router.add("POST", "/embed", self.embed_default)
        router.add("POST", "/classify", self.classify_default)
        router.add("POST", MODEL_PATH + ":predict_text", self.predict_named)

    async def embed_default(self, request: Request, params: dict[str, str]) -> Response:
        served = self._plane.version(self._plane.default_text_model("embed"), routing_key=request.routing_key)
        return await self._predict(request, served)

    async def classify_default(self, request: Request, params: dict[str, str]) -> Response:
        served = self._plane.version(self._plane.default_text_model("classify"), routing_key=request.routing_key)
        return await self._predict(request, served)

    async def predict_named(self, request: Request, params: dict[str, str]) -> Response:
        served = self._plane.version(params["model"], parse_version(params.get("version")), params.get("label"),
                                     request.routing_key)
        return await self._predict(request, served)

    async def _predict(self, request: Request, served: ServedVersion) -> Response:
        text = served.text
        if text is None:
            raise InvalidInput(f"model {served.model!r} has no text preprocessing (config.yaml `text:`)")
        document = loads(request.body)
        task = text.config.task
        if task == "answer":
            return await self._answer(request, served, document)
        texts = _texts(document)
        embedding = task == "embed"
        top_k = _top_k(document, int(text.signature.outputs[0].shape[-1])) if task == "classify" else 0
        served.precheck()
        start = time.perf_counter()
        wanted = {"embed": EMBEDDINGS, "tag": ENTITIES}.get(task, SCORES)
        results = await served.infer({text.input_name: texts}, [wanted], gone=request.disconnected)
        elapsed_ms = round((time.perf_counter() - start) * 1000, 3)
        answer: dict[str, Any] = {"model": served.model, "version": str(served.version)}
        if embedding:
            answer["embeddings"] = results[EMBEDDINGS]
        elif task == "tag":
            answer["entities"] = [orjson.loads(found) for found in results[ENTITIES]]
        else:
            answer["predictions"] = [ranked(row, top_k, text.label) for row in results[SCORES]]
        answer["inference_time_ms"] = elapsed_ms
        arrays = [results[EMBEDDINGS]] if embedding else []
        return Response(200, dumps(answer, arrays))

    async def _answer(self, request: Request, served: ServedVersion, document: Any) -> Response:
        text = served.text
        assert text is not None
        questions, contexts = _texts(document, "questions"), _texts(document, "contexts")
        require(len(questions) == len(contexts), f"{len(questions)} questions and {len(contexts)} contexts: send "
                "one context per question")
        served.precheck()
        start = time.perf_counter()
        results = await served.infer({text.config.question_input: questions, text.config.context_input: contexts},
                                     [ANSWER, SCORE, START, END], gone=request.disconnected)
        elapsed_ms = round((time.perf_counter() - start) * 1000, 3)
        answers = [{"answer": answer, "score": float(score), "start": int(begin), "end": int(end)}
                   for answer, score, begin, end in zip(results[ANSWER], results[SCORE], results[START],
                                                        results[END], strict=True)]
        answer = {"model": served.model, "version": str(served.version), "answers": answers,
                  "inference_time_ms": elapsed_ms}
        return Response(200, dumps(answer, []))
