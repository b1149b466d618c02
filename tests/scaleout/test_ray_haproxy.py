"""`ortserve serve-ray`'s default HTTP ingress: Ray Serve's HAProxy in front of replicas that take HTTP
themselves. Run as users run it (the command, on a local Ray it starts), answered as the standalone server
answers, and stopped by SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from ortserve.bench.server import free_port
from ortserve.examples.models import mlp, save

pytest.importorskip("ray.serve")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_serve_ray_with_the_haproxy_ingress(tmp_path: Path) -> None:
    save(mlp(seed=3), tmp_path / "repository", "mlp")
    port = free_port()
    log = (tmp_path / "serve-ray.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ortserve", "serve-ray", str(tmp_path / "repository"),
                                "--http-port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "serve-ray.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve-ray.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        batch = np.random.default_rng(2).standard_normal((2, 784)).astype(np.float32)
        (expected,) = ort.InferenceSession(str(tmp_path / "repository" / "mlp" / "1" / "model.onnx")).run(
            None, {"input": batch})
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        answer = client.infer("mlp", [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=True)])
        np.testing.assert_allclose(answer.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/models/mlp:predict", json={"instances": [[1.0, 2.0]]},
                         timeout=30)
        assert bad.status_code == 400 and "784" in bad.json()["error"]
        assert "haproxy" in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    assert process.returncode == 0, (tmp_path / "serve-ray.log").read_text()[-3000:]
