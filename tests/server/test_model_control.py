"""Model control modes and the admin token guarding the repository API, over REST and gRPC (tritonclient)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import mlp, save

TOKEN = "s3cret-token"
ROW = {"instances": [[0.1] * 784]}


def _repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repository"
    save(mlp(seed=1), repo, "guarded")
    return repo


@pytest.fixture(scope="module")
def tokened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("tokened")
    with start_server(_repository(tmp), tmp / "server.log", "--model-control", "explicit",
                      "--admin-token", TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def open_to_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Listens on every address, with no admin token (given through the environment, it would be allowed)."""
    tmp = tmp_path_factory.mktemp("network")
    with start_server(_repository(tmp), tmp / "server.log", "--host", "0.0.0.0", "--model-control", "explicit",
                      env={"ORTSERVE_ADMIN_TOKEN": ""}) as running:
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/v2/repository/index", "/v2/repository/models/guarded/load",
                                  "/v2/repository/models/guarded/unload"])
def test_rest_repository_calls_need_the_token(tokened: RunningServer, path: str) -> None:
    missing = httpx.post(f"{tokened.url}{path}")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    wrong = httpx.post(f"{tokened.url}{path}", headers=_bearer("guess"))
    assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]
    basic = httpx.post(f"{tokened.url}{path}", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert httpx.post(f"{tokened.url}/v1/models/guarded:predict", json=ROW).status_code == 200


def test_the_right_token_loads_and_unloads(tokened: RunningServer) -> None:
    client = httpclient.InferenceServerClient(tokened.host_port)
    assert any(entry["name"] == "guarded" for entry in client.get_model_repository_index(headers=_bearer(TOKEN)))
    client.unload_model("guarded", headers=_bearer(TOKEN))
    assert httpx.post(f"{tokened.url}/v1/models/guarded:predict", json=ROW).status_code == 404
    client.load_model("guarded", headers=_bearer(TOKEN))
    assert httpx.post(f"{tokened.url}/v1/models/guarded:predict", json=ROW).status_code == 200


def test_grpc_repository_calls_need_the_token(tokened: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{tokened.grpc_port}")
    for call in (lambda h: client.get_model_repository_index(headers=h),
                 lambda h: client.load_model("guarded", headers=h)):
        for headers in ({}, {"authorization": "Bearer guess"}):
            with pytest.raises(InferenceServerException) as refused:
                call(headers)
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        call({"authorization": f"Bearer {TOKEN}"})
    # inference, metadata and health stay open
    assert client.is_server_ready() and client.get_model_metadata("guarded").name == "guarded"
    assert httpx.get(f"{tokened.url}/metrics").status_code == 200


def test_without_a_token_beyond_loopback_the_repository_api_is_closed(open_to_network: RunningServer) -> None:
    response = httpx.post(f"{open_to_network.url}/v2/repository/models/guarded/load")
    assert response.status_code == 403
    assert "--admin-token" in response.json()["error"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{open_to_network.grpc_port}")
    with pytest.raises(InferenceServerException) as refused:
        client.unload_model("guarded")
    assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
    assert "--admin-token" in refused.value.message()
    assert httpx.post(f"{open_to_network.url}/v1/models/guarded:predict", json=ROW).status_code == 200


def test_the_token_may_come_from_the_environment(tmp_path: Path) -> None:
    with start_server(_repository(tmp_path), tmp_path / "server.log", "--host", "0.0.0.0",
                      env={"ORTSERVE_ADMIN_TOKEN": TOKEN}) as server:
        assert httpx.post(f"{server.url}/v2/repository/index").status_code == 401
        assert httpx.post(f"{server.url}/v2/repository/index", headers=_bearer(TOKEN)).status_code == 200


def test_model_control_modes(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    with start_server(repo, tmp_path / "none.log", "--model-control", "none") as server:
        for action in ("load", "unload"):
            response = httpx.post(f"{server.url}/v2/repository/models/guarded/{action}")
            assert response.status_code == 400 and "'none'" in response.json()["error"]
    with start_server(repo, tmp_path / "poll.log", "--poll-interval", "0.2") as server:
        response = httpx.post(f"{server.url}/v2/repository/models/guarded/unload")
        assert response.status_code == 400 and "remove the model's directory" in response.json()["error"]
        assert httpx.post(f"{server.url}/v2/repository/models/guarded/load").status_code == 200
    with start_server(repo, tmp_path / "explicit.log", "--model-control", "explicit", "--poll-interval",
                      "0.2") as server:
        save(mlp(seed=2), repo, "guarded", 2)
        time.sleep(1.0)  # five poll intervals: explicit control must not have looked
        answer = httpx.post(f"{server.url}/v2/models/guarded/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.1] * 784}]}).json()
        assert answer["model_version"] == "1"
        assert httpx.post(f"{server.url}/v2/repository/models/guarded/load").status_code == 200
        assert httpx.get(f"{server.url}/v2/models/guarded").json()["versions"] == ["2"]
