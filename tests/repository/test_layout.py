"""Version directories: positive integers in ASCII digits; anything else is skipped, never a crash."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ortserve.errors import ConfigError
from ortserve.examples.models import mlp, save
from ortserve.repository.layout import misplaced_repository, version_paths


def test_only_ascii_positive_integers_are_versions(tmp_path: Path) -> None:
    for name in ("1", "3"):
        save(mlp(), tmp_path, "m", int(name))
    for odd in ("0", "¹", "٣", "v2", "-4"):  # a superscript and an Arabic-Indic digit pass str.isdigit()
        (tmp_path / "m" / odd).mkdir()
        (tmp_path / "m" / odd / "model.onnx").write_bytes((tmp_path / "m" / "1" / "model.onnx").read_bytes())
    assert sorted(version_paths(tmp_path / "m")) == [1, 3]


def test_a_tf_serving_base_path_is_refused_with_the_command_that_converts_it(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "resnet" / "1" / "variables").mkdir(parents=True)
    (tmp_path / "resnet" / "1" / "saved_model.pb").write_bytes(b"\x08\x01")
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError) as refused:
        version_paths(tmp_path / "resnet")
    command = f"ortserve convert {tmp_path / 'resnet'} --repository REPOSITORY --model resnet"
    assert "holds TensorFlow SavedModels" in str(refused.value) and command in str(refused.value)
    assert "skipping version 1" in caplog.text


def test_a_version_without_a_model_names_no_conversion(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError) as refused:
        version_paths(tmp_path / "m")
    assert "expected m/1/model.onnx" in str(refused.value) and "convert" not in str(refused.value)


def test_a_directory_that_is_plainly_not_a_repository_is_named(tmp_path: Path) -> None:
    saved_model = tmp_path / "saved"
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"\x08\x01")
    assert "is a TensorFlow SavedModel, not a model repository" in str(misplaced_repository(saved_model))
    base_path = tmp_path / "base"
    (base_path / "3").mkdir(parents=True)
    (base_path / "3" / "saved_model.pb").write_bytes(b"\x08\x01")
    assert f"ortserve convert {base_path} --repository REPOSITORY --model base" in str(misplaced_repository(base_path))
    save(mlp(), tmp_path / "repo", "m")
    assert misplaced_repository(tmp_path / "repo") is None
    assert f"--model_base_path {tmp_path / 'repo' / 'm'}" in str(misplaced_repository(tmp_path / "repo" / "m"))
    (tmp_path / "empty").mkdir()
    assert misplaced_repository(tmp_path / "empty") is None  # an empty repository is a repository
