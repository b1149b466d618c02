"""Concurrent requests through the real server merge into batches, and merged results equal unbatched ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import tritonclient.http as triton

from ortserve.bench.server import RunningServer
from ortserve.bench.server import metric_samples as samples


def _batch_stats(server: RunningServer, model: str) -> dict[int, int]:
    stats = httpx.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]
    return {entry["batch_size"]: entry["compute_infer"]["count"] for entry in stats["batch_stats"]}


def test_concurrent_requests_merge_and_match_unbatched(server: RunningServer, reference) -> None:
    rng = np.random.default_rng(5)
    requests = [rng.standard_normal((rows, 784)).astype(np.float32) for rows in (1, 2, 3, 1, 2, 1, 1, 3)]
    before = _batch_stats(server, "slow_batch")

    def infer(batch: np.ndarray) -> np.ndarray:
        client = triton.InferenceServerClient(server.host_port)
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        return client.infer("slow_batch", [tensor]).as_numpy("logits")

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(infer, requests))

    session = reference("slow_batch")
    for batch, result in zip(requests, results, strict=True):
        (alone,) = session.run(None, {"input": batch})
        np.testing.assert_allclose(result, alone, rtol=1e-6, atol=1e-6)
    after = _batch_stats(server, "slow_batch")
    new_batches = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    executed = {size: count for size, count in new_batches.items() if count}
    # 14 rows arrived within the 200 ms queue delay: they ran in far fewer executions than 8 requests
    assert sum(size * count for size, count in executed.items()) == 14
    assert max(executed) > 3, executed


def test_batch_size_metric_shows_merged_batches(server: RunningServer) -> None:
    body = {"instances": [[0.0] * 784]}
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: httpx.post(f"{server.url}/v1/models/slow_batch:predict", json=body), range(6)))
    buckets = {dict(labels)["le"]: value for (name, labels), value in samples(server).items()
               if name == "ortserve_batch_size_bucket" and ("model", "slow_batch") in labels}
    total = buckets["+Inf"]
    assert total >= 1
    assert buckets["1.0"] < total, "every batch held a single row: nothing merged"


def _flatten_concurrently(server: RunningServer, model: str) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(9)
    requests = [rng.standard_normal((rows, 4)).astype(np.float32) for rows in (1, 2, 1, 3, 1, 2)]

    def infer(batch: np.ndarray) -> np.ndarray:
        client = triton.InferenceServerClient(server.host_port)
        tensor = triton.InferInput("x", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        return client.infer(model, [tensor]).as_numpy("y")

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(zip(requests, pool.map(infer, requests), strict=True))


def test_a_model_whose_output_has_no_row_per_input_row_is_served_unbatched(server: RunningServer) -> None:
    """Its shapes allow batching ([batch, 4] -> [values]); merged, each request would get a slice of the others'."""
    assert triton.InferenceServerClient(server.host_port).get_model_config("flattened")["max_batch_size"] == 0
    stats = httpx.get(f"{server.url}/v2/models/flattened/stats").json()["model_stats"][0]
    assert "output 'y' has shape [12] for a batch of 3 rows" in stats["ortserve"]["scheduler"]["unbatched_because"]
    for request, answer in _flatten_concurrently(server, "flattened"):
        np.testing.assert_array_equal(answer, request.reshape(-1))


def test_a_configured_batch_whose_outputs_cannot_be_cut_runs_its_requests_alone(server: RunningServer) -> None:
    """config.yaml batches it anyway (max_batch_size 8, 200 ms delay): the merged batch's output is not cut into
    wrong pieces; each request runs again alone, and the log says so."""
    for request, answer in _flatten_concurrently(server, "flattened_batched"):
        np.testing.assert_array_equal(answer, request.reshape(-1))
    assert "not a row per input row; its requests ran one by one" in server.log()


def test_a_request_past_the_inferred_batch_limit_runs_in_slices(server: RunningServer, reference) -> None:
    """TF Serving takes thousands of rows in one request; with no max_batch_size in config.yaml, neither does the
    limit ortserve chose refuse them: they run as slices of it, answered as one."""
    limit = triton.InferenceServerClient(server.host_port).get_model_config("mlp")["max_batch_size"]
    rows = np.random.default_rng(11).standard_normal((2 * limit + 3, 784)).astype(np.float32)
    (expected,) = reference("mlp").run(None, {"input": rows})
    response = httpx.post(f"{server.url}/v1/models/mlp:predict", json={"instances": rows.tolist()}, timeout=120)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.array(response.json()["predictions"]), expected, rtol=1e-4, atol=1e-5)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    answer = triton.InferenceServerClient(server.host_port).infer("mlp", [tensor]).as_numpy("logits")
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-5)


def test_a_request_past_a_configured_batch_limit_is_refused(server: RunningServer) -> None:
    """max_batch_size set in config.yaml (64 for slow_batch) is the user's bound, refused past as Triton does."""
    response = httpx.post(f"{server.url}/v1/models/slow_batch:predict", json={"instances": [[0.0] * 784] * 65})
    assert response.status_code == 400
    assert "batch of 65 rows exceeds the model's max_batch_size 64" in response.json()["error"]
