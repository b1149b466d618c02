"""Loading and unloading models at run time through Triton's repository API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import mlp, save

ROW = {"instances": [[0.1] * 784]}


@pytest.fixture(scope="module")
def live_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RunningServer]]:
    repo = tmp_path_factory.mktemp("live_repository")
    save(mlp(seed=1), repo, "first")
    with start_server(repo, repo.parent / "live.log", "--model-control", "explicit") as running:
        yield repo, running


def test_load_a_new_model_then_a_new_version_then_unload(live_repository: tuple[Path, RunningServer]) -> None:
    repo, server = live_repository
    assert httpx.post(f"{server.url}/v1/models/added:predict", json=ROW).status_code == 404

    save(mlp(seed=2), repo, "added", 1)
    assert httpx.post(f"{server.url}/v2/repository/models/added/load").status_code == 200
    first = httpx.post(f"{server.url}/v1/models/added:predict", json=ROW).json()["predictions"]

    save(mlp(seed=3), repo, "added", 2)
    assert httpx.post(f"{server.url}/v2/repository/models/added/load").status_code == 200
    statuses = httpx.get(f"{server.url}/v1/models/added").json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["2"]
    second = httpx.post(f"{server.url}/v1/models/added:predict", json=ROW).json()["predictions"]
    assert first != second

    assert httpx.post(f"{server.url}/v2/repository/models/added/unload").status_code == 200
    assert httpx.post(f"{server.url}/v1/models/added:predict", json=ROW).status_code == 404
    assert httpx.post(f"{server.url}/v1/models/first:predict", json=ROW).status_code == 200


def test_loading_a_broken_model_says_why(live_repository: tuple[Path, RunningServer]) -> None:
    repo, server = live_repository
    save(mlp(), repo, "broken")
    (repo / "broken" / "config.yaml").write_text("version_policy: {specific: [4]}\n")
    response = httpx.post(f"{server.url}/v2/repository/models/broken/load")
    assert response.status_code == 400
    assert "version_policy" in response.json()["error"]
    assert httpx.post(f"{server.url}/v2/repository/models/missing/load").status_code == 404
