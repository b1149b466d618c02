"""Every malformed request gets a 4xx with an error naming the problem, and the server keeps serving."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from ortserve.bench.server import RunningServer
from tests.conftest import SMALL_LIMIT_BYTES

ROW = [0.0] * 784


def _v2(name: str, shape: list[int], datatype: str, data: list) -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def _multi_columns() -> dict[str, list]:
    """The `multi` test model's inputs but its text, one row."""
    return {"a": [[1.0, 2.0, 3.0, 4.0]], "b": [[1, 2, 3, 4]], "half": [[0.5, 1.0, 1.5]]}


def _multi(text: list) -> dict:
    """A V2 request of the `multi` model, its text input's data as given."""
    return {"inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                       {"name": "b", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]},
                       {"name": "half", "shape": [1, 3], "datatype": "FP16", "data": [0.5, 1, 1.5]},
                       {"name": "text", "shape": [len(text)], "datatype": "BYTES", "data": text}]}


def _binary(declared_size: int, payload_size: int) -> tuple[bytes, dict[str, str]]:
    header = ('{"inputs":[{"name":"input","shape":[1,784],"datatype":"FP32",'
              f'"parameters":{{"binary_data_size":{declared_size}}}}}]}}').encode()
    return header + b"\0" * payload_size, {"inference-header-content-length": str(len(header))}


CASES = [
    # (id, method, path, body or JSON, extra headers, status, words the error must contain)
    ("v2-malformed-json", "/v2/models/mlp/infer", b'{"inputs": [', {}, 400, ["malformed JSON"]),
    ("v2-not-an-object", "/v2/models/mlp/infer", b"[1, 2]", {}, 400, ["JSON object"]),
    ("v2-no-inputs", "/v2/models/mlp/infer", {"inputs": []}, {}, 400, ["missing input 'input'"]),
    ("v2-wrong-dtype", "/v2/models/mlp/infer", _v2("input", [1, 784], "FP64", ROW), {}, 400, ["FP64", "FP32"]),
    ("v2-unknown-datatype", "/v2/models/mlp/infer", _v2("input", [1, 784], "FLOAT", ROW), {}, 400,
     ["FLOAT"]),
    ("v2-wrong-shape", "/v2/models/mlp/infer", _v2("input", [1, 783], "FP32", ROW[:783]), {}, 400,
     ["input", "[1, 783]", "[-1, 784]"]),
    ("v2-count-mismatch", "/v2/models/mlp/infer", _v2("input", [2, 784], "FP32", ROW), {}, 400,
     ["784 elements", "1568"]),
    ("v2-not-numbers", "/v2/models/mlp/infer", _v2("input", [1, 2], "FP32", ["a", "b"]), {}, 400, ["input"]),
    ("v2-bad-shape", "/v2/models/mlp/infer", _v2("input", [1, -784], "FP32", ROW), {}, 400, ["shape"]),
    ("v2-unknown-input", "/v2/models/mlp/infer", _v2("pixels", [1, 784], "FP32", ROW), {}, 400,
     ["unknown input 'pixels'", "'input'"]),
    ("v2-missing-input", "/v2/models/multi/infer", _v2("a", [1, 4], "FP32", [1, 2, 3, 4]), {}, 400,
     ["missing input"]),
    ("v2-unknown-output", "/v2/models/mlp/infer",
     {**_v2("input", [1, 784], "FP32", ROW), "outputs": [{"name": "probs"}]}, {}, 400, ["unknown output 'probs'"]),
    ("v2-batch-too-big", "/v2/models/slow_batch/infer", _v2("input", [65, 784], "FP32", ROW * 65), {}, 400,
     ["65 rows", "max_batch_size 64"]),
    ("v2-unknown-model", "/v2/models/nope/infer", _v2("input", [1, 784], "FP32", ROW), {}, 404, ["'nope'"]),
    ("v2-unknown-version", "/v2/models/mlp/versions/9/infer", _v2("input", [1, 784], "FP32", ROW), {}, 404,
     ["version 9"]),
    ("v2-bad-version", "/v2/models/mlp/versions/x1/infer", _v2("input", [1, 784], "FP32", ROW), {}, 400,
     ["'x1'"]),
    ("v2-superscript-version", "/v2/models/mlp/versions/%C2%B9/infer", _v2("input", [1, 784], "FP32", ROW), {},
     400, ["not a positive integer"]),  # '¹' passes str.isdigit() and fails int(): fuzzing found a 500
    ("v2-failed-model", "/v2/models/bad_config/infer", _v2("input", [1, 784], "FP32", ROW), {}, 503,
     ["intra_op_threads"]),
    ("v2-truncated-binary", "/v2/models/mlp/infer", *_binary(3136, 100), 400, ["truncated", "3136 bytes"]),
    ("v2-header-beyond-body", "/v2/models/mlp/infer", b"{}", {"inference-header-content-length": "999"}, 400,
     ["Inference-Header-Content-Length"]),
    ("v2-binary-size-mismatch", "/v2/models/mlp/infer", *_binary(8, 8), 400, ["8 bytes", "3136"]),
    ("v2-leftover-binary", "/v2/models/mlp/infer", *_binary(3136, 3140), 400, ["4 bytes"]),
    ("tf-malformed-json", "/v1/models/mlp:predict", b"{instances", {}, 400, ["malformed JSON"]),
    # what fuzzing found answering 500 (issue 17): simdjson's errors and the standard library's recursion
    ("v2-integer-over-64-bits", "/v2/models/mlp/infer", b'{"inputs": [{"data": [123456789012345678901234567890]}]}',
     {}, 400, ["malformed JSON", "64 bits"]),
    ("v2-nested-100000-deep", "/v2/models/mlp/infer", b"[" * 100_000, {}, 400, ["malformed JSON"]),
    ("tf-nested-2000-deep", "/v1/models/mlp:predict", b"[" * 2000 + b"]" * 2000, {}, 400, ["too deep"]),
    ("tf-nested-900-deep", "/v1/models/mlp:predict", b'{"instances": ' + b"[" * 900 + b"]" * 900 + b"}", {}, 400,
     ["input 'input'", "900 lists deep"]),
    ("v2-not-utf8", "/v2/models/mlp/infer", b'{"inputs": "\xff"}', {}, 400,
     ["UTF-8"]),
    ("v2-nul-in-a-key", "/v2/models/mlp/infer", rb'{"in\u0000puts": []}', {}, 400, ["inputs"]),
    ("tf-both-formats", "/v1/models/mlp:predict", {"instances": [ROW], "inputs": [ROW]}, {}, 400,
     ["exactly one of 'instances'"]),
    ("tf-neither-format", "/v1/models/mlp:predict", {"signature_name": "serving_default"}, {}, 400,
     ["exactly one of 'instances'"]),
    ("tf-ragged", "/v1/models/mlp:predict", {"instances": [ROW, ROW[:3]]}, {}, 400, ["input 'input'"]),
    ("tf-wrong-shape", "/v1/models/mlp:predict", {"instances": [ROW[:10]]}, {}, 400, ["[1, 10]"]),
    ("tf-unknown-signature", "/v1/models/mlp:predict", {"signature_name": "predict", "instances": [ROW]}, {}, 400,
     ["'predict'"]),
    ("tf-unknown-input", "/v1/models/mlp:predict", {"instances": [{"pixels": ROW}]}, {}, 400, ["'pixels'"]),
    ("tf-missing-input", "/v1/models/multi:predict", {"instances": [{"a": [1, 2, 3, 4]}]}, {}, 400,
     ["missing input"]),
    ("tf-bad-b64", "/v1/models/multi:predict", {"inputs": {"text": [{"b64": "%%%"}]}}, {}, 400, ["base64"]),
    ("tf-non-ascii-b64", "/v1/models/multi:predict", {"inputs": {"text": [{"b64": "\u00e9t\u00e9"}]}}, {}, 400,
     ["base64"]),  # fuzzing found a 500: b64decode raises ValueError, not binascii.Error, outside ASCII
    # a JSON number, null or boolean for text is refused, as TF Serving and Triton refuse it (it was read as its
    # spelling: null became the string "None")
    ("v2-number-for-text", "/v2/models/multi/infer", _multi([5]), {}, 400, ["input 'text'", "the number 5"]),
    ("tf-null-for-text", "/v1/models/multi:predict", {"inputs": {**_multi_columns(), "text": [None]}}, {}, 400,
     ["input 'text'", "takes text", "null"]),
    ("tf-boolean-for-text", "/v1/models/multi:predict", {"inputs": {**_multi_columns(), "text": [True]}}, {}, 400,
     ["input 'text'", "true"]),
    ("tf-unknown-model", "/v1/models/nope:predict", {"instances": [ROW]}, {}, 404, ["'nope'"]),
    ("tf-unknown-label", "/v1/models/versioned/labels/beta:predict", {"instances": [ROW]}, {}, 404, ["'beta'"]),
    ("tf-unknown-version", "/v1/models/versioned/versions/8:predict", {"instances": [ROW]}, {}, 404,
     ["version 8"]),
    ("no-such-endpoint", "/v3/anything", {}, {}, 404, ["/v3/anything"]),
    ("unknown-content-encoding", "/v1/models/mlp:predict", b"...", {"Content-Encoding": "br"}, 415, ["'br'", "gzip"]),
    ("not-gzip", "/v1/models/mlp:predict", b"{}", {"Content-Encoding": "gzip"}, 400, ["not valid gzip"]),
    ("gzip-cut-short", "/v1/models/mlp:predict", gzip.compress(b'{"instances": [[0]]}')[:-12],
     {"Content-Encoding": "gzip"}, 400, ["ends early"]),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "words"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_request_gets_a_clear_error(server: RunningServer, path: str, body, headers: dict, status: int,
                                        words: list[str]) -> None:
    if isinstance(body, bytes):
        response = httpx.post(server.url + path, content=body, headers=headers)
    else:
        response = httpx.post(server.url + path, json=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error


def test_server_still_serves_after_the_battery(server: RunningServer) -> None:
    for path, body, headers, _, _ in (case[1:] for case in CASES):
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        httpx.post(server.url + path, headers=headers, **kwargs)
    response = httpx.post(f"{server.url}/v1/models/mlp:predict", json={"instances": [ROW]})
    assert response.status_code == 200
    assert np.array(response.json()["predictions"]).shape == (1, 10)


def test_wrong_method_is_405(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/v2/models/mlp/infer")
    assert response.status_code == 405
    assert "GET" in response.json()["error"]


def test_compressed_body_inflating_past_the_limit_is_413(small_limit_server: RunningServer) -> None:
    bomb = gzip.compress(b" " * (SMALL_LIMIT_BYTES * 50))
    assert len(bomb) < SMALL_LIMIT_BYTES
    response = httpx.post(f"{small_limit_server.url}/v1/models/mlp:predict", content=bomb,
                          headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert f"decompresses past the limit of {SMALL_LIMIT_BYTES}" in response.json()["error"]


def test_head_answers_as_get_without_a_body(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:  # one connection: HEAD must leave it usable
        for path in ("/v2/health/ready", "/v2/models/mlp", "/v1/models/mlp"):
            got, head = client.get(path), client.head(path)
            assert (head.status_code, head.content) == (got.status_code, b"")
            assert head.headers["content-length"] == str(len(got.content))
        assert client.head("/v2/models/mlp/infer").status_code == 405


def test_body_over_the_limit_is_413(small_limit_server: RunningServer) -> None:
    big = {"instances": [ROW] * 8}
    response = httpx.post(f"{small_limit_server.url}/v1/models/mlp:predict", json=big)
    assert response.status_code == 413
    assert str(SMALL_LIMIT_BYTES) in response.json()["error"]
    ok = httpx.post(f"{small_limit_server.url}/v1/models/mlp:predict", json={"instances": [ROW]})
    assert ok.status_code == 200


@pytest.mark.parametrize("chunk_bytes", [1000, 30_000], ids=["many-chunks", "one-chunk"])
def test_chunked_body_over_the_limit_is_413(small_limit_server: RunningServer, chunk_bytes: int) -> None:
    def chunks() -> Iterator[bytes]:  # one chunk: it arrives whole, with its end, in one ASGI message
        for _ in range(30_000 // chunk_bytes):
            yield b" " * chunk_bytes

    response = httpx.post(f"{small_limit_server.url}/v1/models/mlp:predict", content=chunks())
    assert response.status_code == 413
