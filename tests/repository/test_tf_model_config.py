"""Reading TF Serving's model config (ModelServerConfig in text format) into served models, and the scratch
repository of links that serves them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ortserve.errors import ConfigError
from ortserve.repository.config import load_config
from ortserve.repository.tf_model_config import ConfiguredRepository, model_entries, read_config_file


@pytest.fixture
def store(tmp_path: Path) -> Path:
    for name in ("a", "b"):
        (tmp_path / "store" / name / "1").mkdir(parents=True)
    return tmp_path / "store"


def _entries(tmp_path: Path, text: str) -> list:
    path = tmp_path / "models.config"
    path.write_text(text)
    return model_entries(read_config_file(path))


def test_a_tf_serving_model_config_file_becomes_entries_with_their_policy_and_labels(tmp_path: Path,
                                                                                   store: Path) -> None:
    entries = _entries(tmp_path, f"""
        model_config_list {{
          config {{
            name: 'first'
            base_path: '{store / "a"}'
            model_platform: 'tensorflow'
            model_version_policy {{ specific {{ versions: 1 versions: 3 }} }}
            version_labels {{ key: 'stable' value: 1 }}
            version_labels {{ key: 'canary' value: 3 }}
            logging_config {{ sampling_config {{ sampling_rate: 0.5 }} }}
          }}
          config {{ name: 'second' base_path: '{store / "b"}' model_version_policy {{ all {{}} }} }}
          config {{ name: 'third' base_path: '{store / "b"}' model_version_policy {{ latest {{ num_versions: 2 }} }} }}
          config {{ name: 'plain' base_path: '{store / "b"}' }}
        }}""")
    assert [(entry.name, entry.base_path) for entry in entries] == [
        ("first", store / "a"), ("second", store / "b"), ("third", store / "b"), ("plain", store / "b")]
    assert entries[0].overrides == {"version_policy": {"specific": [1, 3]}, "labels": {"stable": 1, "canary": 3}}
    assert entries[1].overrides == {"version_policy": "all"}
    assert entries[2].overrides == {"version_policy": {"latest": 2}}
    assert entries[3].overrides == {}  # config.yaml's, or the default: the latest version


@pytest.mark.parametrize(("text", "message"), [
    ("model_config_list { config { name: 'x' base_pth: '/' } }", 'has no field named "base_pth"'),
    ("model_config_list { config { name: 'x' base_path: '{a}' } config { name: 'x' base_path: '{b}' } }",
     "names model 'x' twice"),
    ("model_config_list { config { name: 'x' } }", "model 'x': base_path is empty"),
    ("model_config_list { config { name: 'x' base_path: '{a}/missing' } }", "is not a directory"),
    ("model_config_list { config { name: '../up' base_path: '{a}' } }", "name '../up' is not a model name"),
    ("model_config_list { config { name: 'x' base_path: '{a}' version_labels { key: 'a-b' value: 1 } } }",
     "model 'x': invalid model_version_policy or version_labels: field 'labels'"),
    ("model_config_list { config { name: 'x' base_path: '{a}' model_version_policy { specific {} } } }",
     "specific lists no versions"),
    ("custom_model_config { }", "custom_model_config is not supported"),
])
def test_a_model_config_that_cannot_be_served_names_its_problem(tmp_path: Path, store: Path, text: str,
                                                                message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _entries(tmp_path, text.replace("{a}", str(store / "a")).replace("{b}", str(store / "b")))
    assert message in str(refused.value)


def test_the_scratch_repository_links_entries_and_overrides_their_config(tmp_path: Path, store: Path) -> None:
    (store / "a" / "config.yaml").write_text("max_batch_size: 4\nlabels: {old: 1}\n")
    configured = ConfiguredRepository()
    try:
        first = _entries(tmp_path, f"model_config_list {{ config {{ name: 'm' base_path: '{store / 'a'}' "
                                   "version_labels { key: 'stable' value: 1 } } "
                                   f"config {{ name: 'n' base_path: '{store / 'b'}' }} }}")
        assert configured.apply(first) == []
        assert sorted(os.listdir(configured.path)) == ["m", "n"]
        config = load_config(configured.path / "m", configured.overrides["m"])
        assert config.max_batch_size == 4 and config.labels == {"stable": 1}  # the entry's labels win
        second = _entries(tmp_path, f"model_config_list {{ config {{ name: 'm' base_path: '{store / 'b'}' }} }}")
        assert configured.apply(second) == ["n"]
        assert os.listdir(configured.path) == ["m"]
        assert (configured.path / "m").resolve() == store / "b"
        assert configured.overrides == {"m": {}}
    finally:
        configured.close()
    assert not configured.path.exists()
