from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tritonclient.http as triton

from ortserve.bench.server import start_server
from ortserve.examples.models import mlp


def test_serve_refuses_a_missing_repository(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = subprocess.run([sys.executable, "-m", "ortserve", "serve", str(missing)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "not a directory" in result.stderr


def test_help_lists_the_serve_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "ortserve", "serve", "--help"], capture_output=True, text=True,
                            timeout=60)
    for flag in ("--host", "--rest-port", "--grpc-port"):
        assert flag in result.stdout


def test_serve_without_a_repository_explains_how_to_build_the_demo(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ortserve", "serve"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert "python -m ortserve.examples.demo demo-repository" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_one_onnx_file(tmp_path: Path) -> None:
    """`ortserve serve tiny_mlp.onnx`: model 'tiny_mlp', version 1, defaults; its scratch repository goes with it."""
    path = tmp_path / "tiny_mlp.onnx"
    onnx.save(mlp(inputs=6, hidden=5, outputs=2, seed=3), str(path))
    rows = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    with start_server(path, tmp_path / "server.log") as server:
        tensor = triton.InferInput("input", [3, 6], "FP32")
        tensor.set_data_from_numpy(rows)
        answer = triton.InferenceServerClient(server.host_port).infer("tiny_mlp", [tensor]).as_numpy("logits")
        scratch = re.search(r"repository (\S+) loaded", server.log())
    (expected,) = ort.InferenceSession(str(path)).run(None, {"input": rows})
    np.testing.assert_allclose(answer, expected, rtol=1e-6)
    assert scratch is not None and not Path(scratch.group(1)).exists()


def test_serve_refuses_a_model_config_whose_base_paths_hold_saved_models(tmp_path: Path, capsys) -> None:
    """TF Serving's config pointed at before its models were converted: said at start, with the command."""
    from ortserve.cli import main

    (tmp_path / "tf" / "resnet" / "1").mkdir(parents=True)
    (tmp_path / "tf" / "resnet" / "1" / "saved_model.pb").write_bytes(b"\x08\x01")
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "resnet" base_path: "{tmp_path / "tf" / "resnet"}" }} }}')
    assert main(["serve", "--model_config_file", str(config)]) == 2
    said = capsys.readouterr().err
    assert "model 'resnet': base_path" in said and "holds TensorFlow SavedModels, not ONNX models" in said
    assert f"ortserve convert --model_config_file {config} --repository REPOSITORY" in said
    assert main(["serve", "--model_base_path", str(tmp_path / "tf" / "resnet"), "--model_name", "resnet"]) == 2
    assert "then serve --model_base_path REPOSITORY/resnet" in capsys.readouterr().err
