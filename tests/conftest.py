from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest
import yaml

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples import demo
from ortserve.examples.models import fixed_shape, flattened, mlp, multi_io, save, total

# Models come from installed packages only: make any attempt to reach a model hub fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_config(repository: Path, model: str, config: dict) -> None:
    (repository / model / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository with every case the protocol tests need."""
    repo = tmp_path_factory.mktemp("repository")
    save(mlp(), repo, "mlp")
    save(multi_io(), repo, "multi")
    save(fixed_shape(scale=3.0), repo, "fixed")
    for version in (1, 2, 3):
        save(mlp(seed=version), repo, "versioned", version)
    write_config(repo, "versioned", {"version_policy": "all", "labels": {"stable": 2, "canary": 3}})
    # Versions 1 and 2 on disk, only the latest served by the default policy.
    save(mlp(seed=11), repo, "latest_only", 1)
    save(mlp(seed=12), repo, "latest_only", 2)
    # A long queue delay so that concurrent requests surely meet in one batch.
    save(mlp(), repo, "slow_batch")
    write_config(repo, "slow_batch", {"max_batch_size": 64, "max_queue_delay_us": 200_000})
    # Waits as long, for the tests of calls that end while queued alone.
    save(mlp(), repo, "abandoned")
    write_config(repo, "abandoned", {"max_batch_size": 64, "max_queue_delay_us": 200_000})
    # Alike, for one test of a stream cancelled while its requests wait (2 s: a slow machine's reads fit in it)
    save(mlp(), repo, "abandoned_stream")
    write_config(repo, "abandoned_stream", {"max_batch_size": 64, "max_queue_delay_us": 2_000_000})
    # Shapes that allow batching, an output that has no row per input row: served unbatched unless configured
    save(flattened(), repo, "flattened")
    save(flattened(), repo, "flattened_batched")
    save(total(), repo, "total")  # a scalar output
    write_config(repo, "flattened_batched", {"max_batch_size": 8, "max_queue_delay_us": 200_000})
    # Asks for GPUs first: must fall back to the CPU and say so.
    save(mlp(), repo, "gpu_first")
    write_config(repo, "gpu_first", {"execution_providers": ["tensorrt", {"name": "cuda", "options": {"device_id": 0}},
                                                              "cpu"]})
    save(mlp(), repo, "bad_config")
    write_config(repo, "bad_config", {"max_batch_size": 8, "session": {"intra_op_threads": -2}})
    save(fixed_shape(), repo, "bad_batch")
    write_config(repo, "bad_batch", {"max_batch_size": 4})
    save(mlp(), repo, "bad_label")
    write_config(repo, "bad_label", {"labels": {"stable": 7}})
    save(multi_io(), repo, "bad_warmup")
    write_config(repo, "bad_warmup", {"warmup": {"runs": 1, "shapes": {"a": [5]}}})
    (repo / "no_versions").mkdir()
    return repo


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's demo repository, built as `make run` builds it (EfficientNet-Lite0, real weights)."""
    repository = tmp_path_factory.mktemp("demo") / "repository"
    assert demo.build(repository)
    assert not demo.build(repository), "a second build must reuse the first"
    return repository


@pytest.fixture(scope="session")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(repository, tmp_path_factory.mktemp("logs") / "server.log") as running:
        yield running


SMALL_LIMIT_BYTES = 20_000


@pytest.fixture(scope="session")
def small_limit_server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose REST bodies and gRPC messages may hold at most SMALL_LIMIT_BYTES."""
    log = tmp_path_factory.mktemp("small_limit") / "server.log"
    limit = str(SMALL_LIMIT_BYTES)
    with start_server(repository, log, "--max-body-bytes", limit, "--grpc-max-message-bytes", limit) as running:
        yield running


@pytest.fixture(scope="session")
def reference(repository: Path):
    """In-process onnxruntime sessions on the same files: the answers the server must give."""
    cache: dict[tuple[str, int], ort.InferenceSession] = {}

    def session(model: str, version: int = 1) -> ort.InferenceSession:
        key = (model, version)
        if key not in cache:
            cache[key] = ort.InferenceSession(str(repository / model / str(version) / "model.onnx"))
        return cache[key]

    return session
