"""Property: whatever a client sends to a REST endpoint, the answer is a 4xx with {"error": ...} or a 2xx that
answers the request (or the 503 of a model that cannot serve), never another 5xx or a dropped connection, and
the server stays ready, with no traceback in its log. Generated and mutated
requests for every REST front end (V2 JSON and binary, TF Serving, the image API, the repository API), against
the real server on loopback. Repeatable (derandomized); ORTSERVE_FUZZ_EXAMPLES runs more (`make fuzz`)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ortserve.bench.server import RunningServer, start_server
from tests.fuzz import strategies as gen
from tests.fuzz.settings import FUZZ

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: nothing the fuzzer does can touch the other tests' server."""
    with start_server(repository, tmp_path_factory.mktemp("fuzz-logs") / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(fuzzed: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.url, timeout=30) as session:
        yield session
    assert httpx.get(f"{fuzzed.url}/v2/health/ready", timeout=10).status_code == 200
    assert "Traceback" not in fuzzed.log(), fuzzed.log()[-3000:]


def _answered_well(response: httpx.Response) -> None:
    """A 2xx, a 4xx, the 503 of a model that cannot serve (one that failed to load, or overloaded), the 504 of
    a request whose own `timeout` parameter (microseconds) passed before it could run, or the 507 of a run that
    could not get the memory the request asked for."""
    try:
        timed = b'"timeout"' in response.request.content
    except httpx.RequestNotRead:  # a streamed (multipart) upload: no V2 parameters
        timed = False
    out_of_memory = response.status_code == 507 and b"ran out of memory" in response.content
    assert (response.status_code < 500 or response.status_code == 503 or (response.status_code == 504 and timed)
            or out_of_memory), (response.request.url, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), (
            response.request.url, response.status_code, response.text[:500])
        error = response.json()["error"]
        assert isinstance(error, str) and error, response.text[:500]


@FUZZ
@given(model=st.sampled_from(gen.MODELS), version=st.one_of(st.none(), gen.path_segment), body=gen.v2_json,
       headers=gen.headers)
def test_v2_json(client: httpx.Client, model: str, version: str | None, body: str | bytes,
                 headers: dict[str, str]) -> None:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/infer"
    response = client.post(path, content=body, headers=headers)
    _answered_well(response)
    if response.status_code == 200:
        assert isinstance(response.json()["outputs"], list)


@FUZZ
@given(model=st.sampled_from(gen.MODELS), request=gen.v2_binary())
def test_v2_binary(client: httpx.Client, model: str, request: tuple[bytes, dict[str, str]]) -> None:
    body, headers = request
    _answered_well(client.post(f"/v2/models/{model}/infer", content=body, headers=headers))


@FUZZ
@given(model=st.sampled_from(gen.MODELS), verb=st.sampled_from(["predict", "classify", "regress", "nothing"]),
       label=st.one_of(st.none(), gen.path_segment), body=gen.tfs_json, headers=gen.headers)
def test_tf_serving(client: httpx.Client, model: str, verb: str, label: str | None, body: str | bytes,
                    headers: dict[str, str]) -> None:
    path = f"/v1/models/{model}" + (f"/labels/{label}" if label is not None else "") + f":{verb}"
    response = client.post(path, content=body, headers=headers)
    _answered_well(response)
    if response.status_code == 200:
        assert "predictions" in response.json() or "outputs" in response.json()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=0, max_value=len(PNG) - 1), st.integers(0, 255)), max_size=6),
       cut=st.integers(min_value=0, max_value=len(PNG)), field=st.sampled_from(["image", "file", "img"]),
       top_k=st.one_of(st.none(), st.text(max_size=6)), model=st.sampled_from(["", *gen.MODELS]))
def test_image_uploads(client: httpx.Client, flips: list[tuple[int, int]], cut: int, field: str, top_k: str | None,
                       model: str) -> None:
    """A small PNG with bytes changed and cut short, under the right field name or not, to a model with image
    preprocessing or one without."""
    image = bytearray(PNG)
    for at, value in flips:
        image[at] = value
    data = {} if top_k is None else {"top_k": top_k}
    path = "/predict" if not model else f"/v1/models/{model}:predict_image"
    _answered_well(client.post(path, files={field: ("upload", bytes(image[:cut]))}, data=data))


@FUZZ
@given(body=st.one_of(gen.json_value.map(gen._text_of), st.binary(max_size=100)))
def test_multipart_that_is_not(client: httpx.Client, body: str | bytes) -> None:
    _answered_well(client.post("/predict", content=body,
                               headers={"content-type": "multipart/form-data; boundary=xyz"}))


@FUZZ
@given(action=st.sampled_from(["index", "load", "unload"]), model=gen.path_segment,
       body=st.one_of(gen.json_value.map(gen._text_of), st.binary(max_size=100)))
def test_repository_api(client: httpx.Client, action: str, model: str, body: str | bytes) -> None:
    path = "/v2/repository/index" if action == "index" else f"/v2/repository/models/{model}/{action}"
    _answered_well(client.post(path, content=body))


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
       path=st.lists(gen.path_segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
       body=st.binary(max_size=64))
def test_any_path(client: httpx.Client, method: str, path: str, body: bytes) -> None:
    _answered_well(client.request(method, path, content=body or None))


@FUZZ
@given(depth=st.integers(min_value=1, max_value=5000), inner=st.sampled_from([b"", b"1", b"1.5, 2", b'"x"', b"{}"]),
       where=st.sampled_from(["v2", "tfs-rows", "tfs-columns"]))
def test_deep_nesting(client: httpx.Client, depth: int, inner: bytes, where: str) -> None:
    """Nested lists of any depth where tensor data goes (the JSON generator above cannot write them)."""
    nested = b"[" * depth + inner + b"]" * depth
    if where == "v2":
        body = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ' + nested + b"}]}"
        _answered_well(client.post("/v2/models/mlp/infer", content=body))
    elif where == "tfs-rows":
        _answered_well(client.post("/v1/models/mlp:predict", content=b'{"instances": ' + nested + b"}"))
    else:
        _answered_well(client.post("/v1/models/multi:predict", content=b'{"inputs": {"a": ' + nested + b"}}"))
