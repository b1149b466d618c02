"""Rollouts in the registry: load beside, switch in one step, drain what leaves; failures replace nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from ortserve.examples.models import mlp, save
from ortserve.runtime.model import State
from ortserve.runtime.registry import RETIRE_GRACE_S, ModelRegistry
from tests.conftest import write_config

ROW = {"input": np.ones((1, 784), np.float32)}


def test_a_request_routed_before_the_switch_is_still_answered(tmp_path: Path) -> None:
    async def scenario() -> None:
        save(mlp(seed=1), tmp_path, "m", 1)
        registry = ModelRegistry(tmp_path)
        await registry.load_all()
        routed_before = registry.get("m").resolve()
        save(mlp(seed=2), tmp_path, "m", 2)
        await registry.load("m")
        assert registry.get("m").resolve().version == 2
        answer = await routed_before.infer(ROW)  # within the grace: version 1 still takes it
        assert answer["logits"].shape == (1, 10)
        await asyncio.sleep(RETIRE_GRACE_S + 0.5)
        assert routed_before.state is State.END and routed_before.drained
        registry.stop()

    asyncio.run(scenario())


def test_what_changes_decides_what_reloads(tmp_path: Path) -> None:
    async def scenario() -> None:
        for version in (1, 2):
            save(mlp(seed=version), tmp_path, "m", version)
        write_config(tmp_path, "m", {"version_policy": "all"})
        registry = ModelRegistry(tmp_path)
        await registry.load_all()
        first = dict(registry.get("m").versions)
        write_config(tmp_path, "m", {"version_policy": "all", "labels": {"stable": 1}})  # routing only
        await registry.load("m")
        assert all(registry.get("m").versions[v] is first[v] for v in (1, 2))
        assert registry.get("m").resolve(label="stable") is first[1]
        write_config(tmp_path, "m", {"version_policy": "all", "max_batch_size": 4})  # serving: both anew
        await registry.load("m")
        second = registry.get("m").versions
        assert all(second[v] is not first[v] and second[v].max_batch_size == 4 for v in (1, 2))
        save(mlp(seed=9), tmp_path, "m", 2)  # version 2's file rewritten: only it reloads
        await registry.load("m")
        assert registry.get("m").versions[1] is second[1] and registry.get("m").versions[2] is not second[2]
        third = dict(registry.get("m").versions)
        (tmp_path / "m" / "labels.txt").write_text("a\nb\n")  # a file of the model's own: every version reads it
        await registry.load("m")
        assert all(registry.get("m").versions[v] is not third[v] for v in (1, 2))
        registry.stop()

    asyncio.run(scenario())


def test_failures_replace_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        save(mlp(seed=1), tmp_path, "m", 1)
        registry = ModelRegistry(tmp_path)
        await registry.load_all()
        serving = registry.get("m").resolve()
        (tmp_path / "m" / "2").mkdir()
        (tmp_path / "m" / "2" / "model.onnx").write_bytes(b"garbage")
        model = await registry.load("m")  # latest: 1 selects only the broken version 2
        assert model.resolve() is serving and "version 2" in model.reload_error
        (tmp_path / "m" / "config.yaml").write_text("max_batch_size: [")
        model = await registry.load("m")
        assert model.resolve() is serving and "not valid YAML" in model.reload_error
        save(mlp(seed=1), tmp_path, "m", 1)  # version 1 rewritten while version 2 is still broken ...
        (tmp_path / "m" / "config.yaml").write_text("version_policy: {specific: [1]}\n")
        model = await registry.load("m")  # ... and selected alone: it reloads beside itself
        assert model.resolve() is not serving and model.reload_error == ""
        registry.stop()

    asyncio.run(scenario())


def test_a_routing_change_keeps_the_shadow_and_its_agreement(tmp_path: Path) -> None:
    async def scenario() -> None:
        for version in (1, 2):
            save(mlp(seed=version), tmp_path, "m", version)
        base = {"version_policy": "all", "labels": {"stable": 1, "candidate": 2}}
        write_config(tmp_path, "m", {**base, "routing": {"split": {"stable": 100}, "shadow": {"target": 2}}})
        registry = ModelRegistry(tmp_path)
        await registry.load_all()
        lane = registry.get("m").shadow
        assert lane is not None and registry.get("m").versions[1].shadow is lane
        assert registry.get("m").versions[2].shadow is None  # the shadow's own requests are not copied
        lane.stats.compared = 7  # as if copies had been compared
        write_config(tmp_path, "m", {**base, "routing": {"split": {"stable": 50, "candidate": 50},
                                                         "shadow": {"target": 2}}})
        await registry.load("m")
        assert registry.get("m").shadow is lane and lane.stats.compared == 7
        write_config(tmp_path, "m", {**base, "routing": {"split": {"stable": 50, "candidate": 50},
                                                         "shadow": {"target": 2, "fraction": 0.5}}})
        await registry.load("m")
        fresh = registry.get("m").shadow
        assert fresh is not None and fresh is not lane and fresh.fraction == 0.5 and fresh.stats.compared == 0
        write_config(tmp_path, "m", base)
        await registry.load("m")
        assert registry.get("m").shadow is None and registry.get("m").versions[1].shadow is None
        registry.stop()

    asyncio.run(scenario())
