"""Triton's logging extension through the real server, with tritonclient (REST and gRPC): the settings read,
changed, and taking effect on what the server logs; bad settings refused; changes guarded like the repository
API."""

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

AVAILABLE = "is available on"  # the INFO line of a model version that came up


@pytest.fixture
def controlled(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    """A server in explicit model control (loads on request, each logging its INFO line)."""
    repo = tmp_path / "repository"
    save(mlp(seed=3), repo, "first")
    with start_server(repo, tmp_path / "server.log", "--model-control", "explicit") as running:
        yield running, repo


def _wait_for_load_logged(server: RunningServer, model: str) -> str:
    """The server's log once model `model` has finished loading (the load call has returned by then)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = server.log()
        if f"model {model!r}" in text:
            return text
        time.sleep(0.05)
    return server.log()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_settings_are_read_changed_and_applied_to_the_log(controlled, protocol: str) -> None:
    server, repo = controlled
    if protocol == "http":
        client = httpclient.InferenceServerClient(server.host_port)
        read = client.get_log_settings
    else:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

        def read() -> dict:
            return {name: value[next(iter(value))] for name, value in
                    client.get_log_settings(as_json=True)["settings"].items()}
    settings = read()
    assert settings == {"log_file": "", "log_info": True, "log_warning": True, "log_error": True,
                        "log_verbose_level": 0, "log_format": "default"}

    client.update_log_settings({"log_info": False})
    assert read()["log_info"] is False
    save(mlp(seed=4), repo, "quiet")
    client.load_model("quiet")
    assert f"model 'quiet' version 1 {AVAILABLE}" not in server.log()

    client.update_log_settings({"log_info": True, "log_format": "ISO8601"})
    save(mlp(seed=5), repo, "loud")
    client.load_model("loud")
    line = next(line for line in _wait_for_load_logged(server, "loud").splitlines()
                if f"model 'loud' version 1 {AVAILABLE}" in line)
    assert line[10] == "T" and line.split(" ", 1)[0].endswith("Z"), line  # 2026-12-01T05:40:12.627Z
    assert read() == {**settings, "log_format": "ISO8601"}


@pytest.mark.parametrize("body, named", [
    ({"log_verbose": 1}, "unknown log setting 'log_verbose'"),
    ({"log_info": "yes"}, "'log_info' must be true or false"),
    ({"log_verbose_level": -1}, "'log_verbose_level' must be a whole number"),
    ({"log_format": "json"}, "'log_format' must be one of default, ISO8601"),
    ({"log_file": "/tmp/elsewhere.log"}, "log_file cannot be changed"),
    ({"log_info": False, "log_format": "json"}, "'log_format' must be one of"),
])
def test_bad_settings_are_refused_naming_the_problem_and_change_nothing(server: RunningServer, body: dict,
                                                                       named: str) -> None:
    before = httpx.get(f"{server.url}/v2/logging").json()
    response = httpx.post(f"{server.url}/v2/logging", json=body)
    assert response.status_code == 400
    assert named in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/logging").json() == before
    assert httpx.post(f"{server.url}/v2/logging", content=b"[1, 2]").status_code == 400


def test_a_bad_setting_over_grpc_is_invalid_argument(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(InferenceServerException) as refused:
        client.update_log_settings({"log_format": "json"})
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'log_format' must be one of default, ISO8601" in refused.value.message()


def test_changes_need_the_admin_token_when_the_server_has_one(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    save(mlp(seed=3), repo, "guarded")
    with start_server(repo, tmp_path / "server.log", "--admin-token", "t0ken") as server:
        assert httpx.get(f"{server.url}/v2/logging").status_code == 200  # reading is open
        refused = httpx.post(f"{server.url}/v2/logging", json={"log_verbose_level": 1})
        assert refused.status_code == 401
        assert "changing the log settings needs 'Authorization: Bearer TOKEN'" in refused.json()["error"]
        allowed = httpx.post(f"{server.url}/v2/logging", json={"log_verbose_level": 1},
                             headers={"Authorization": "Bearer t0ken"})
        assert allowed.status_code == 200 and allowed.json()["log_verbose_level"] == 1
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        with pytest.raises(InferenceServerException) as unauthenticated:
            client.update_log_settings({"log_verbose_level": 0})
        assert unauthenticated.value.status() == "StatusCode.UNAUTHENTICATED"


def test_the_server_metadata_lists_the_logging_extension(server: RunningServer) -> None:
    assert "logging" in httpclient.InferenceServerClient(server.host_port).get_server_metadata()["extensions"]
