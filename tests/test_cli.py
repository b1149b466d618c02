from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
