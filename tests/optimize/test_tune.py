"""ortserve tune: the choice follows from the measured points, the published version and config match it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from tests.optimize.conftest import listing

from ortserve.cli import main
from ortserve.optimize.commands import samples_for
from ortserve.optimize.source import resolve

QUICK = ["--threads", "1", "--instances", "1", "--batch-sizes", "1,4", "--seconds-per-point", "0.1", "--task",
         "classification", "--calibration-data", "random", "--calibration-samples", "32", "--samples", "64"]


def _tune(repository: Path, report: Path, *extra: str) -> int:
    return main(["tune", "mlp", "--repository", str(repository), "--report", str(report), *QUICK, *extra])


def test_tune_publishes_the_fastest_variant_within_budget(mlp_repository: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "report"
    assert _tune(mlp_repository, report, "--variants", "int8-static,int8-dynamic,optimized",
                 "--accuracy-budget", "0.1") == 0, capsys.readouterr().err
    result = json.loads((report / "report.json").read_text())
    points = result["points"]
    # the MLP's layers are Gemm, which dynamic quantization does not cover: skipped, with the reason
    assert "none of MatMul" in result["skipped"]["int8-dynamic"]
    assert sorted({p["variant"] for p in points}) == ["int8-static", "optimized"] and len(points) == 2 * 2
    for point in points:
        assert point["eligible"] == (point["loss"] <= 0.1)
    best = max((p for p in points if p["eligible"]), key=lambda p: p["rows_per_second"])
    assert result["choice"] == best
    for point in points:  # rows/s is the batch over its median latency
        assert point["rows_per_second"] == pytest.approx(point["batch_size"] / point["p50_ms"] * 1000)

    version = mlp_repository / "mlp" / "2"
    record = json.loads((version / "provenance.json").read_text())
    assert record["step"]["tuned"] == best
    assert record["step"]["kind"] == result["variants"][best["variant"]]["step"]["kind"]
    config = yaml.safe_load((mlp_repository / "mlp" / "config.yaml").read_text())
    assert config["session"]["intra_op_threads"] == best["threads"] == 1
    assert config["max_batch_size"] == best["batch_size"]

    # the published file's loss, recomputed on the evaluation samples the search used
    source = resolve("mlp", mlp_repository, 1)
    x = samples_for(source, "random", 64, seed=1).feeds["input"]
    reference = ort.InferenceSession(str(source.path)).run(None, {"input": x})[0]
    tuned = ort.InferenceSession(str(version / "model.onnx")).run(None, {"input": x})[0]
    loss = 1 - float(np.mean(reference.argmax(1) == tuned.argmax(1)))
    assert loss == pytest.approx(best["loss"])
    assert loss <= 0.1

    assert (report / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (report / "report.md").read_text()
    assert f"**Chosen:** {best['variant']}, 1 threads x 1 instances" in markdown
    assert f"chose {best['variant']}" in capsys.readouterr().out


def test_fp32_staying_fastest_writes_no_version_but_sets_the_serving_config(mlp_repository: Path,
                                                                           tmp_path: Path) -> None:
    assert _tune(mlp_repository, tmp_path / "report", "--variants", "fp32", "--accuracy-budget", "0",
                 "--latency-slo", "1000") == 0
    assert sorted(p.name for p in (mlp_repository / "mlp").iterdir()) == ["1", "config.yaml"]
    choice = json.loads((tmp_path / "report" / "report.json").read_text())["choice"]
    config = yaml.safe_load((mlp_repository / "mlp" / "config.yaml").read_text())
    assert config["max_batch_size"] == choice["batch_size"]


def test_instances_are_timed_side_by_side_and_the_chosen_count_is_served(mlp_repository: Path, tmp_path: Path) -> None:
    assert _tune(mlp_repository, tmp_path / "report", "--variants", "fp32", "--accuracy-budget", "0",
                 "--instances", "1,2") == 0
    result = json.loads((tmp_path / "report" / "report.json").read_text())
    points = result["points"]
    assert sorted({(p["instances"], p["batch_size"]) for p in points}) == [(1, 1), (1, 4), (2, 1), (2, 4)]
    for point in points:  # two sessions side by side answer twice the batch per run
        assert point["rows_per_second"] == pytest.approx(point["instances"] * point["batch_size"] / point["p50_ms"]
                                                         * 1000)
    config = yaml.safe_load((mlp_repository / "mlp" / "config.yaml").read_text())
    assert config["instances"] == result["choice"]["instances"]
    assert config["session"]["intra_op_threads"] == result["choice"]["threads"] == 1


def test_unreachable_budget_or_slo_is_an_error_and_writes_nothing(mlp_repository: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    before = listing(mlp_repository)
    assert _tune(mlp_repository, tmp_path / "r1", "--variants", "int8-static", "--accuracy-budget", "0") == 1
    error = capsys.readouterr().err
    assert "no variant meets the accuracy budget 0; losses: int8-static" in error
    assert _tune(mlp_repository, tmp_path / "r2", "--variants", "fp32", "--accuracy-budget", "0.1",
                 "--latency-slo", "0.000001") == 1
    assert "and the latency SLO 1e-06 ms" in capsys.readouterr().err
    assert _tune(mlp_repository, tmp_path / "r3", "--variants", "fp32,warp-drive", "--accuracy-budget", "0.1") == 1
    assert "unknown variant 'warp-drive'" in capsys.readouterr().err
    assert _tune(mlp_repository, tmp_path / "r4", "--variants", "fp32", "--accuracy-budget", "0.1",
                 "--execution-modes", "sideways") == 1
    assert "invalid session setting execution_mode='sideways'" in capsys.readouterr().err
    assert listing(mlp_repository) == before
