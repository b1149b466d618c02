"""Version directories: positive integers in ASCII digits; anything else is skipped, never a crash."""

from __future__ import annotations

from pathlib import Path

from ortserve.examples.models import mlp, save
from ortserve.repository.layout import version_paths


def test_only_ascii_positive_integers_are_versions(tmp_path: Path) -> None:
    for name in ("1", "3"):
        save(mlp(), tmp_path, "m", int(name))
    for odd in ("0", "¹", "٣", "v2", "-4"):  # a superscript and an Arabic-Indic digit pass str.isdigit()
        (tmp_path / "m" / odd).mkdir()
        (tmp_path / "m" / odd / "model.onnx").write_bytes((tmp_path / "m" / "1" / "model.onnx").read_bytes())
    assert sorted(version_paths(tmp_path / "m")) == [1, 3]
