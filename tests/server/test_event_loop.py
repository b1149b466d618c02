"""`--event-loop`: the HTTP front end on uvloop (default) or on asyncio's own loop, serving alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import mlp, save


def test_the_server_runs_on_the_event_loop_asked_for(server: RunningServer, tmp_path: Path) -> None:
    assert "event loop uvloop" in server.log()  # the default
    path = save(mlp(), tmp_path / "repository", "mlp")
    rows = np.random.default_rng(3).standard_normal((2, 784)).astype(np.float32)
    with start_server(tmp_path / "repository", tmp_path / "server.log", "--event-loop", "asyncio") as running:
        request = httpclient.InferInput("input", [2, 784], "FP32")
        request.set_data_from_numpy(rows)
        answer = httpclient.InferenceServerClient(running.host_port).infer("mlp", [request]).as_numpy("logits")
        assert "event loop asyncio" in running.log()
    (expected,) = ort.InferenceSession(str(path)).run(None, {"input": rows})
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-5)
