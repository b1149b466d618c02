"""Serving a TF Serving model config (`--model-config-file`, `--model-base-path`) and replacing it at run time with
ModelService.HandleReloadConfigRequest, through TF Serving's own client (tensorflow-serving-api)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import requests

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import mlp, save

ROW = {"instances": [[0.5, -1.0, 2.0, 0.25]]}


def _store(root: Path) -> Path:
    """Model 'a' with versions 1-3, model 'b' with version 1: small MLPs of 4 inputs."""
    for version in (1, 2, 3):
        save(mlp(inputs=4, hidden=8, outputs=2, seed=version), root, "a", version)
    save(mlp(inputs=4, hidden=8, outputs=2, seed=9), root, "b")
    return root


def _config(*models: str) -> str:
    return "model_config_list {\n" + "\n".join(f"  config {{ {model} }}" for model in models) + "\n}\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[tuple[RunningServer, Path]]:
    """A server following a model config file (polled every 0.2 s), and the file."""
    tmp = tmp_path_factory.mktemp("configured")
    config_file = tmp / "models.config"
    config_file.write_text(_config(f"name: 'alpha' base_path: '{store / 'a'}' model_platform: 'tensorflow' "
                                   "model_version_policy { specific { versions: 1 versions: 2 } } "
                                   "version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' "
                                   "value: 2 }"))
    with start_server(None, tmp / "server.log", "--model_config_file", str(config_file),
                      "--poll-interval", "0.2") as running:
        yield running, config_file


@pytest.fixture(scope="module")
def tf_serving(served: tuple[RunningServer, Path]):
    """TF Serving's own ModelService stub, and its ReloadConfigRequest."""
    pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{served[0].grpc_port}")
    yield model_service_pb2_grpc.ModelServiceStub(channel), model_management_pb2
    channel.close()


def _versions(server: RunningServer, model: str) -> list[int] | int:
    """The versions the model serves, as TF Serving's REST status lists them; the HTTP status when not 200."""
    answer = requests.get(f"{server.url}/v1/models/{model}", timeout=10)
    if answer.status_code != 200:
        return answer.status_code
    return sorted(int(status["version"]) for status in answer.json()["model_version_status"])


def _label_version(server: RunningServer, model: str, label: str) -> int:
    answer = requests.post(f"{server.url}/v1/models/{model}/labels/{label}:predict", json=ROW, timeout=10)
    assert answer.status_code == 200, answer.text
    metadata = requests.get(f"{server.url}/v1/models/{model}/labels/{label}/metadata", timeout=10).json()
    return int(metadata["model_spec"]["version"])


def _until(check: Callable[[], object], expected: object, timeout_s: float = 30) -> object:
    """`check()` once it returns `expected`, or its last value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _reload(tf_serving, text: str, **kwargs: object):
    from google.protobuf import text_format

    stub, management = tf_serving
    request = management.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    return stub.HandleReloadConfigRequest(request, timeout=60, **kwargs)


def test_the_files_models_serve_with_its_version_policy_and_labels(served: tuple[RunningServer, Path]) -> None:
    server, _ = served
    assert _versions(server, "alpha") == [1, 2]
    assert _label_version(server, "alpha", "stable") == 1
    assert _label_version(server, "alpha", "canary") == 2
    assert _versions(server, "a") == 404  # served under the config's name, not its directory's


def test_reload_config_replaces_the_served_models(served: tuple[RunningServer, Path], tf_serving,
                                                  store: Path) -> None:
    server, config_file = served
    response = _reload(tf_serving, _config(
        f"name: 'alpha' base_path: '{store / 'a'}' model_version_policy {{ latest {{ num_versions: 2 }} }} "
        "version_labels { key: 'stable' value: 3 }",
        f"name: 'beta' base_path: '{store / 'b'}'"))
    assert response.status.error_code == 0
    assert _versions(server, "alpha") == [2, 3]
    assert _label_version(server, "alpha", "stable") == 3
    assert _versions(server, "beta") == [1]

    _reload(tf_serving, _config(f"name: 'beta' base_path: '{store / 'b'}'"))
    assert _until(lambda: _versions(server, "alpha"), 404) == 404
    assert _versions(server, "beta") == [1]

    # the file, changed, is applied again (what it lists and nothing else)
    config_file.write_text(_config(f"name: 'alpha' base_path: '{store / 'a'}' model_version_policy {{ all {{}} }}"))
    assert _until(lambda: _versions(server, "alpha"), [1, 2, 3]) == [1, 2, 3]
    assert _until(lambda: _versions(server, "beta"), 404) == 404


@pytest.mark.parametrize(("text", "code", "message"), [
    (_config("name: 'gamma' base_path: '/nonexistent/models/gamma'"), grpc.StatusCode.INVALID_ARGUMENT,
     "model 'gamma': base_path '/nonexistent/models/gamma' is not a directory"),
    (_config("name: 'gamma' base_path: '{store}/a' model_version_policy { specific { versions: 7 } }"),
     grpc.StatusCode.FAILED_PRECONDITION, "selects none of the versions on disk [1, 2, 3]"),
    (_config("name: 'gamma' base_path: '{store}/a' version_labels { key: 'stable' value: 1 }"),
     grpc.StatusCode.FAILED_PRECONDITION, "'labels.stable' points to version 1, which is not served"),
])
def test_a_reload_that_cannot_be_served_says_why(served: tuple[RunningServer, Path], tf_serving, store: Path,
                                                 text: str, code: grpc.StatusCode, message: str) -> None:
    server, _ = served
    _reload(tf_serving, _config(f"name: 'alpha' base_path: '{store / 'a'}'"))
    with pytest.raises(grpc.RpcError) as refused:
        _reload(tf_serving, text.replace("{store}", str(store)))
    assert refused.value.code() is code
    assert message in refused.value.details()
    if code is grpc.StatusCode.INVALID_ARGUMENT:  # refused as a whole: what served still serves
        assert _versions(server, "alpha") == [3]
    else:  # applied, as TF Serving applies it: the models not listed leave, the listed one reports its failure
        assert _until(lambda: _versions(server, "alpha"), 404) == 404
        status = requests.get(f"{server.url}/v1/models/gamma", timeout=10)
        assert message in status.text


def test_a_server_of_a_repository_refuses_reload_config(tmp_path: Path, store: Path) -> None:
    pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    with start_server(store, tmp_path / "server.log") as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = model_management_pb2.ReloadConfigRequest()
        request.config.model_config_list.config.add(name="x", base_path=str(store / "a"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.HandleReloadConfigRequest(request, timeout=30)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "start it with --model-config-file" in refused.value.details()


def test_model_base_path_serves_one_model_as_tensorflow_model_server_does(tmp_path: Path, store: Path) -> None:
    with start_server(None, tmp_path / "server.log", "--model_base_path", str(store / "a")) as server:
        assert _versions(server, "default") == [3]
    with start_server(None, tmp_path / "named.log", "--model_base_path", str(store / "b"),
                      "--model_name", "bee") as server:
        assert _versions(server, "bee") == [1]
