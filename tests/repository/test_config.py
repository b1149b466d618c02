"""config.yaml: defaults, every knob parsed, and errors that name the model and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from ortserve.errors import ConfigError
from ortserve.repository.config import ModelConfig, load_config, parse_config


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config == ModelConfig()
    assert config.max_batch_size is None  # derived from the signature at load time
    assert config.version_policy.latest == 1
    assert [p.name for p in config.execution_providers] == ["CPUExecutionProvider"]
    # scheduling is the scheduler's choice, and the queue is bounded with admission on
    assert config.max_queue_delay_us is None and config.latency_slo_ms is None
    assert config.queue.admission and config.queue.max_rows is None and config.queue.max_wait_ms == 2000
    assert (config.instances.min, config.instances.max, config.instances.adaptive) == (1, 1, False)


def test_every_knob_parses(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("""
max_batch_size: 16
max_queue_delay_us: 500
preferred_batch_sizes: [4, 8]
session: {intra_op_threads: 2, inter_op_threads: 1, execution_mode: parallel, graph_optimization_level: extended,
          enable_cpu_mem_arena: false, enable_mem_pattern: false, allow_spinning: true}
execution_providers:
  - name: tensorrt
    options: {trt_fp16_enable: true}
  - cuda
  - cpu
version_policy: {specific: [1, 3]}
labels: {stable: 1, canary: 3}
warmup: {runs: 3, batch_size: 2, shapes: {input: [128]}}
latency_slo_ms: 250
queue: {max_rows: 64, max_wait_ms: 500, admission: false}
instances: {min: 1, max: 4}
""")
    config = load_config(tmp_path)
    assert config.max_batch_size == 16 and config.preferred_batch_sizes == [4, 8]
    assert config.session.execution_mode == "parallel" and config.session.intra_op_threads == 2
    assert [p.name for p in config.execution_providers] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert config.execution_providers[0].options == {"trt_fp16_enable": True}
    assert config.version_policy.select([1, 2, 3, 4]) == [1, 3]
    assert config.labels == {"stable": 1, "canary": 3}
    assert config.warmup.shapes == {"input": [128]}
    assert config.latency_slo_ms == 250 and config.queue.max_rows == 64 and not config.queue.admission
    assert config.instances.adaptive and config.instances.max == 4


def test_an_instance_count_is_a_fixed_range() -> None:
    instances = parse_config("m", {"instances": 3}).instances
    assert (instances.min, instances.max, instances.adaptive) == (3, 3, False)


@pytest.mark.parametrize(("policy", "expected"), [
    ("all", [1, 2, 5]),
    ({"latest": 2}, [2, 5]),
    ({"latest": 9}, [1, 2, 5]),
    ({"specific": [5, 7]}, [5]),
])
def test_version_policies(policy, expected: list[int]) -> None:
    assert parse_config("m", {"version_policy": policy}).version_policy.select([5, 1, 2]) == expected


@pytest.mark.parametrize(("data", "words"), [
    ({"max_batch_size": -1}, ["'max_batch_size'", "greater than or equal to 0"]),
    ({"session": {"intra_op_threads": "many"}}, ["'session.intra_op_threads'"]),
    ({"session": {"execution_mode": "fast"}}, ["'session.execution_mode'"]),
    ({"version_policy": {"latest": 0}}, ["'version_policy.latest'"]),
    ({"version_policy": {"latest": 1, "all": True}}, ["'version_policy'", "exactly one"]),
    ({"labels": {"my-label": 1}}, ["'labels'", "[a-zA-Z0-9_]+"]),
    ({"execution_providers": ["gpu"]}, ["'execution_providers.0.name'", "'gpu'"]),
    ({"max_batch_size": 4, "preferred_batch_sizes": [8]}, ["preferred_batch_sizes [8] exceed max_batch_size 4"]),
    ({"batch_size": 4}, ["'batch_size'", "Extra inputs"]),
    ({"instances": {"min": 3, "max": 2}}, ["'instances'", "min (3) is larger than max (2)"]),
    ({"instances": 0}, ["'instances.min'"]),
    ({"latency_slo_ms": 0}, ["'latency_slo_ms'", "greater than 0"]),
    ({"queue": {"max_rows": 0}}, ["'queue.max_rows'"]),
    ({"queue": {"bound": 5}}, ["'queue.bound'", "Extra inputs"]),
    ([1, 2], ["must be a mapping"]),
])
def test_errors_name_model_and_field(data, words: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("resnet", data)
    message = str(error.value)
    assert message.startswith("model 'resnet'")
    for word in words:
        assert word in message


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("max_batch_size: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path)


def test_routing_cache_and_group_fields_parse() -> None:
    config = parse_config("m", {"version_policy": "all", "labels": {"stable": 1},
                                "routing": {"split": {"stable": 90, 2: 10}, "shadow": {"target": "3"}},
                                "response_cache": {"max_bytes": 1024}})
    assert config.routing.split == {"stable": 90.0, 2: 10.0}
    assert [config.version_of(ref) for ref in (*config.routing.split, "3", "nope")] == [1, 2, 3, None]
    assert config.routing.shadow is not None and config.routing.shadow.fraction == 1.0
    assert config.response_cache is not None and config.response_cache.max_bytes == 1024
    group = parse_config("g", {"group": {"members": ["a", "b"], "policy": "weighted", "weights": {"a": 1, "b": 3}}})
    assert group.group is not None and group.group.weights == {"a": 1.0, "b": 3.0}


@pytest.mark.parametrize(("data", "words"), [
    ({"routing": {"split": {"stable": 0}}}, ["routing.split.stable", "greater than 0"]),
    ({"routing": {"shadow": {"target": 2, "fraction": 1.5}}}, ["routing.shadow.fraction"]),
    ({"routing": {"shadow": {"fraction": 0.5}}}, ["routing.shadow.target", "required"]),
    ({"response_cache": {"max_bytes": 0}}, ["response_cache.max_bytes"]),
    ({"group": {"members": []}}, ["group.members"]),
    ({"group": {"members": ["a", "a"]}}, ["name a model twice"]),
    ({"group": {"members": ["a", "b"], "policy": "weighted", "weights": {"a": 1}}}, ["a weight for every member"]),
    ({"group": {"members": ["a"], "weights": {"a": 1}}}, ["weights are for policy 'weighted'"]),
    ({"group": {"members": ["a"], "policy": "fastest"}}, ["group.policy"]),
    ({"group": {"members": ["a"]}, "labels": {"x": 1}}, ["holds only `group:`", "labels"]),
])
def test_routing_errors_name_the_field(data, words: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("m", data)
    for word in words:
        assert word in str(raised.value)
