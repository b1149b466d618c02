"""`ortserve bench` against a real ortserve on loopback, every protocol; `compare`; bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ortserve.bench.server import RunningServer


def _bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ortserve", "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def _url(server: RunningServer, protocol: str) -> str:
    return f"127.0.0.1:{server.grpc_port}" if protocol.endswith("grpc") else server.url


@pytest.mark.parametrize("protocol", ["v2-rest", "v2-binary", "v2-grpc", "tfs-rest", "tfs-grpc"])
def test_every_protocol_gives_sane_figures(server: RunningServer, tmp_path: Path, protocol: str) -> None:
    completed = _bench(_url(server, protocol), "--model", "mlp", "--protocol", protocol, "--concurrency", "1,4",
                       "--duration", "1", "--warmup", "0.3", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    assert "throughput" in completed.stdout
    points = json.loads((tmp_path / "report.json").read_text())["points"]
    assert [entry["concurrency"] for entry in points] == [1, 4]
    for entry in points:
        assert entry["errors"] == 0 and entry["codes"] == {"OK": entry["sent"]}, entry["codes"]
        assert entry["throughput_per_s"] == pytest.approx(entry["sent"] / 1.0)
        assert 0 < entry["p50_ms"] <= entry["p90_ms"] <= entry["p99_ms"] < 1000
        assert entry["throughput_per_s"] > 50
    assert {path.name for path in tmp_path.iterdir()} >= {"report.json", "report.md", "throughput-latency.png",
                                                          "latency-cdf.png"}


def test_refusals_are_counted_not_dropped(server: RunningServer, tmp_path: Path) -> None:
    """A deadline no request can meet: every answer is an error, counted by its code."""
    completed = _bench(_url(server, "v2-grpc"), "--model", "mlp", "--protocol", "v2-grpc", "--rate", "100",
                       "--deadline", "0.000001", "--duration", "1", "--warmup", "0.2", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    (entry,) = json.loads((tmp_path / "report.json").read_text())["points"]
    assert entry["rate"] == 100 and entry["throughput_per_s"] == 0 and entry["p50_ms"] is None
    assert entry["errors"] == entry["sent"] > 50
    assert set(entry["codes"]) == {"DEADLINE_EXCEEDED"}


def test_open_loop_holds_its_rate(server: RunningServer, tmp_path: Path) -> None:
    completed = _bench(server.url, "--model", "mlp", "--protocol", "v2-binary", "--rate", "200", "--duration", "2",
                       "--warmup", "0.3", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    (entry,) = json.loads((tmp_path / "report.json").read_text())["points"]
    assert 150 <= entry["sent"] / 2 <= 250 and entry["errors"] == 0


def test_compare_draws_runs_together(server: RunningServer, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert _bench(server.url, "--model", "mlp", "--concurrency", "1", "--duration", "0.5", "--warmup", "0.1",
                      "--out", str(tmp_path / name)).returncode == 0
    completed = _bench("compare", str(tmp_path / "a" / "report.json"), str(tmp_path / "b" / "report.json"),
                       "--labels", "before,after", "--out", str(tmp_path / "both"))
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "both" / "throughput-latency.png").stat().st_size > 10_000


@pytest.mark.parametrize(("args", "words"), [
    (["--model", "nope", "--protocol", "v2-rest"], "'nope' is not in the repository"),
    (["--model", "mlp", "--concurrency", "0"], "give positive numbers"),
    (["--model", "mlp", "--concurrency", "1", "--rate", "5"], "not both"),
    (["--model", "mlp", "--protocol", "image"], "--image"),
    (["--model", "mlp", "--shape", "input"], "NAME:D1,D2"),
    (["--model", "mlp", "--data", "missing.npz"], "neither 'random', 'zeros' nor an .npz"),
])
def test_bad_arguments_get_one_clear_line(server: RunningServer, args: list[str], words: str) -> None:
    completed = _bench(server.url, *args, "--duration", "0.2", "--warmup", "0")
    assert completed.returncode == 2
    assert words in completed.stderr.strip().splitlines()[-1], completed.stderr
    assert "Traceback" not in completed.stderr


def test_compare_without_reports_says_so(tmp_path: Path) -> None:
    completed = _bench("compare", str(tmp_path / "none.json"), "--out", str(tmp_path))
    assert completed.returncode == 2 and "no such report" in completed.stderr


@pytest.mark.parametrize("protocol", ["v2-rest", "v2-binary", "v2-grpc", "tfs-rest", "tfs-grpc"])
def test_inputs_of_every_type(server: RunningServer, tmp_path: Path, protocol: str) -> None:
    """FP32, INT64, FP16 and BYTES inputs, built from the server's metadata, answered without an error."""
    completed = _bench(_url(server, protocol), "--model", "multi", "--protocol", protocol, "--concurrency", "2",
                       "--batch-size", "3", "--duration", "0.5", "--warmup", "0.1", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    (entry,) = json.loads((tmp_path / "report.json").read_text())["points"]
    assert entry["errors"] == 0 and entry["sent"] > 10, entry["codes"]
