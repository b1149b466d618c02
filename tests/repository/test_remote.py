"""A model repository on object storage: an S3-compatible server (moto, on loopback) holds the repository; the
server mirrors it, serves it, follows a version uploaded while it serves (no call fails), reuses its downloads
across restarts, and never logs the credentials. The mirror itself is checked on a file:// store."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from ortserve.bench.server import free_port, start_server
from ortserve.examples.models import mlp, save
from ortserve.repository.remote import RemoteRepository, redacted

pytestmark = pytest.mark.slow
SECRET = "not-a-real-secret-but-never-log-it"
ROW = np.random.default_rng(7).standard_normal((1, 784)).astype(np.float32)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    environment = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    yield environment
    server.stop()


def _bucket(s3: dict[str, str], name: str) -> object:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client


def _upload(client: object, bucket: str, prefix: str, local: Path) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")  # type: ignore[attr-defined]


def _answer(url: str) -> tuple[int, np.ndarray]:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ROW.ravel().tolist()}]}
    response = httpx.post(f"{url}/v2/models/mlp/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    return int(answer["model_version"]), np.asarray(answer["outputs"][0]["data"], np.float32)


def _expected(local: Path, version: int) -> np.ndarray:
    session = ort.InferenceSession(str(local / "mlp" / str(version) / "model.onnx"))
    return session.run(None, {"input": ROW})[0].ravel()


def test_serves_an_s3_repository_and_follows_a_new_version(s3: dict[str, str], tmp_path: Path) -> None:
    local = tmp_path / "local"
    save(mlp(seed=1), local, "mlp", 1)
    client = _bucket(s3, "models")
    _upload(client, "models", "prod/repository", local)
    cache = tmp_path / "cache"
    arguments = ("--cache-dir", str(cache), "--poll-interval", "1")
    with start_server("s3://models/prod/repository", tmp_path / "server.log", *arguments, env=s3) as server:
        version, output = _answer(server.url)
        assert version == 1
        np.testing.assert_allclose(output, _expected(local, 1), rtol=1e-5, atol=1e-6)

        failures: list[str] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    _answer(server.url)
                except AssertionError as exc:
                    failures.append(str(exc))

        caller = threading.Thread(target=traffic)
        caller.start()
        try:
            save(mlp(seed=2), local, "mlp", 2)
            _upload(client, "models", "prod/repository", local)
            deadline = time.monotonic() + 60
            while _answer(server.url)[0] != 2:
                assert time.monotonic() < deadline, "version 2 was never served"
                time.sleep(0.2)
        finally:
            stop.set()
            caller.join()
        assert failures == []
        np.testing.assert_allclose(_answer(server.url)[1], _expected(local, 2), rtol=1e-5, atol=1e-6)
        assert SECRET not in server.log()

    blobs = {path.name: path.stat().st_mtime_ns for path in (cache / "blobs").iterdir()}
    assert len(blobs) == 2  # the two versions' model.onnx files
    with start_server("s3://models/prod/repository", tmp_path / "again.log", *arguments, env=s3) as server:
        assert _answer(server.url)[0] == 2
    assert {path.name: path.stat().st_mtime_ns for path in (cache / "blobs").iterdir()} == blobs  # nothing fetched


def test_a_missing_bucket_is_named_and_the_server_stays_live(s3: dict[str, str], tmp_path: Path) -> None:
    with start_server("s3://no-such-bucket/repository", tmp_path / "server.log", "--cache-dir",
                      str(tmp_path / "cache"), env=s3, wait_ready=False) as server:
        deadline = time.monotonic() + 30
        while "no-such-bucket" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200
        assert SECRET not in server.log()


def test_the_mirror_follows_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    save(mlp(seed=1), store, "mlp", 1)
    (store / "mlp" / "config.yaml").write_text("max_batch_size: 8\n")
    save(mlp(seed=2), store, "other", 1)
    mirror = RemoteRepository(f"file://{store}", tmp_path / "cache")
    assert mirror.sync()
    assert (mirror.path / "mlp" / "1" / "model.onnx").read_bytes() == (store / "mlp" / "1" / "model.onnx").read_bytes()
    assert (mirror.path / "mlp" / "config.yaml").read_text() == "max_batch_size: 8\n"
    assert not mirror.sync()  # nothing changed: nothing to do

    (store / "mlp" / "config.yaml").write_text("max_batch_size: 16\n")
    save(mlp(seed=3), store, "mlp", 2)
    os.remove(store / "other" / "1" / "model.onnx")
    (store / "other" / "1").rmdir()
    (store / "other").rmdir()
    assert mirror.sync()
    assert (mirror.path / "mlp" / "config.yaml").read_text() == "max_batch_size: 16\n"
    assert (mirror.path / "mlp" / "2" / "model.onnx").is_file()
    assert not (mirror.path / "other").exists()
    assert not [path for path in mirror.path.rglob(".*")]  # no staging left behind


def test_credentials_in_a_url_are_never_shown() -> None:
    assert redacted("s3://key:secret@bucket/prefix") == "s3://bucket/prefix"
    assert redacted("gs://bucket/prefix") == "gs://bucket/prefix"
