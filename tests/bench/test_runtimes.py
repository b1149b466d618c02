"""`ortserve bench runtimes SOURCE`: a source framework against ONNX Runtime FP32 and static INT8, in process, on
small models; what it keeps and leaves behind; bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

pytestmark = pytest.mark.slow

RUNTIMES = ["onnxruntime FP32", "onnxruntime INT8"]


def _runtimes(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, with its temporary files under `tmp`."""
    return subprocess.run([sys.executable, "-m", "ortserve", "bench", "runtimes", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp)})


def _versions(model_dir: Path) -> list[str]:
    return sorted(path.name for path in model_dir.iterdir() if path.name.isdigit())


def _ours(folder: Path) -> list[str]:
    """What this command left in a temporary folder (onnxruntime leaves a `.ses` file of its own at import)."""
    return [path.name for path in folder.iterdir() if path.name.startswith("ortserve-")]


def test_pytorch_model_against_onnx_runtime_fp32_and_int8(tmp_path: Path) -> None:
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    completed = _runtimes("tests.convert.factories:small_net", "--input", "features:float32:batch,6",
                          "--batch-sizes", "1,4", "--duration", "0.3", "--out", str(out), tmp=scratch)
    assert completed.returncode == 0, completed.stderr
    assert "onnxruntime INT8" in completed.stdout and "vs source" in completed.stdout
    report = json.loads((out / "runtimes.json").read_text())
    assert report["framework"] == "pytorch"
    rows = report["rows"]
    assert [(row["runtime"], row["batch_size"]) for row in rows] == [
        (runtime, size) for size in (1, 4) for runtime in ["pytorch (source)", *RUNTIMES]]
    for row in rows:
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        assert row["items_per_s"] == pytest.approx(row["batch_size"] / row["p50_ms"] * 1000)
    source_rows = {row["batch_size"]: row for row in rows if row["runtime"] == "pytorch (source)"}
    for row in rows:
        assert row["speedup"] == pytest.approx(row["items_per_s"] / source_rows[row["batch_size"]]["items_per_s"])
    assert report["fp32_vs_source"]["passed"]
    int8 = report["int8_vs_fp32"]
    assert int8["samples"] == 64 and 0 <= int8["loss"] < 0.05  # INT8 of a small MLP stays close to FP32
    assert report["fp32_path"] is None and report["int8_path"] is None
    assert _ours(scratch) == []  # the temporary repository is gone
    assert {path.name for path in out.iterdir()} == {"runtimes.json", "runtimes.md", "runtimes.png"}
    assert "| onnxruntime INT8 | 4 |" in (out / "runtimes.md").read_text()


def test_sklearn_model_kept_in_a_repository(tmp_path: Path) -> None:
    """A scikit-learn pipeline converts to ai.onnx.ml operators only: INT8 has nothing to quantize, and the table
    still compares the source with ONNX Runtime, saying why INT8 is missing."""
    features, labels = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features.astype(np.float32),
                                                                                      labels)
    joblib.dump(pipeline, tmp_path / "iris.joblib")
    repository, out = tmp_path / "repository", tmp_path / "out"
    completed = _runtimes(str(tmp_path / "iris.joblib"), "--repository", str(repository), "--duration", "0.3",
                          "--out", str(out), tmp=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert _versions(repository / "iris") == ["1"]  # FP32 from convert
    report = json.loads((out / "runtimes.json").read_text())
    assert report["fp32_path"] == str(repository / "iris" / "1" / "model.onnx")
    assert [row["runtime"] for row in report["rows"]] == ["sklearn (source)", "onnxruntime FP32"] * 2
    assert report["int8_vs_fp32"] is None and "ai.onnx.ml" in report["int8_refused"]
    assert "INT8: not measured" in completed.stdout


def test_kept_int8_version_records_where_it_came_from(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    completed = _runtimes("tests.convert.factories:small_net", "--input", "features:float32:batch,6",
                          "--repository", str(repository), "--model", "net", "--batch-sizes", "1",
                          "--duration", "0.2", tmp=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert _versions(repository / "net") == ["1", "2"]  # FP32, then INT8
    provenance = json.loads((repository / "net" / "2" / "provenance.json").read_text())
    assert provenance["derived_from"]["version"] == 1 and provenance["step"]["kind"] == "int8-static"


@pytest.mark.parametrize(("args", "words"), [
    ((), "give one SOURCE"),
    (("nowhere/model.pt",), "does not exist"),
    (("tests.convert.factories:small_net", "--input", "features:float32"), "name:dtype:dim"),
    (("tests.convert.factories:small_net", "--input", "features:float32:6", "--batch-sizes", "1,8"),
     "no dynamic batch dimension"),
])
def test_bad_arguments_get_one_clear_line(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    completed = _runtimes(*args, tmp=tmp_path)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert words in lines[-1], completed.stderr
    assert _ours(tmp_path) == []


def test_a_model_taking_ids_is_timed_on_ids_its_embedding_has(tmp_path: Path) -> None:
    """The timed inputs were drawn from [-1, 1): PyTorch's Embedding refused id -1."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    completed = _runtimes("tests.convert.factories:word_bag", "--input", "ids:int64:batch,12", "--batch-sizes", "1,4",
                          "--duration", "0.2", "--out", str(tmp_path / "out"), tmp=scratch)
    assert completed.returncode == 0, completed.stderr
    rows = json.loads((tmp_path / "out" / "runtimes.json").read_text())["rows"]
    assert {row["runtime"] for row in rows} >= {"pytorch (source)", "onnxruntime FP32"}
