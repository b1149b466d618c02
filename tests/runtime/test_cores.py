"""The cores a process may use: affinity capped by a cgroup CPU quota; ONNX Runtime kept within them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ortserve.runtime import cores


@pytest.fixture
def cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cgroup files under tmp_path in place of the real ones (none written yet: no quota)."""
    for name, path in (("CGROUP_V2_MAX", "cpu.max"), ("CGROUP_V1_QUOTA", "v1/cpu.cfs_quota_us"),
                       ("CGROUP_V1_PERIOD", "v1/cpu.cfs_period_us")):
        monkeypatch.setattr(cores, name, tmp_path / path)
    (tmp_path / "v1").mkdir()
    return tmp_path


def test_a_cgroup_v2_quota_caps_the_cores(cgroup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert cores.usable_cores() == 8
    (cgroup / "cpu.max").write_text("150000 100000\n")
    assert cores.cpu_quota() == pytest.approx(1.5)
    assert cores.usable_cores() == 2  # a part-used core still runs a thread
    (cgroup / "cpu.max").write_text("max 100000\n")
    assert cores.cpu_quota() is None and cores.usable_cores() == 8


def test_a_cgroup_v1_quota_caps_the_cores(cgroup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    (cgroup / "v1" / "cpu.cfs_quota_us").write_text("400000\n")
    (cgroup / "v1" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores.usable_cores() == 4
    (cgroup / "v1" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cores.usable_cores() == 8


def test_affinity_below_the_quota_wins(cgroup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    (cgroup / "cpu.max").write_text("400000 100000\n")
    assert cores.usable_cores() == 2


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores to give the process one")
def test_a_served_model_keeps_to_the_cores_the_process_was_given(tmp_path: Path) -> None:
    """Under `taskset -c 0`, ONNX Runtime's default pool pinned a worker thread to core 1."""
    first = min(os.sched_getaffinity(0))
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        os.sched_setaffinity(0, {{{first}}})
        import ortserve
        from ortserve.examples.models import mlp, save
        path = save(mlp(), Path({str(tmp_path)!r}), "mlp")
        with ortserve.Engine.from_file(path, name="mlp") as engine:
            engine.model("mlp").resolve()
            escaped = {{int(task): sorted(os.sched_getaffinity(int(task))) for task in os.listdir("/proc/self/task")
                        if os.sched_getaffinity(int(task)) != {{{first}}}}}
        print("escaped", escaped)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "escaped {}" in completed.stdout
