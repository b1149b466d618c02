"""config.yaml's inputs/outputs: the server refuses a version that breaks them; publishing declares and keeps them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from ortserve.cli import main
from ortserve.examples.models import fixed_shape, mlp, multi_io, save
from ortserve.runtime.model import State
from ortserve.runtime.registry import ModelRegistry

MLP_CONTRACT = {"inputs": [{"name": "input", "datatype": "FP32", "dims": [-1, 784]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, 10]}]}


def _load(repository: Path, name: str) -> dict[int, tuple[State, str | None]]:
    async def load() -> dict[int, tuple[State, str | None]]:
        registry = ModelRegistry(repository)
        model = await registry.load(name)
        states = {v: (served.state, served.error) for v, served in model.versions.items()}
        registry.stop()
        return states

    return asyncio.run(load())


@pytest.mark.parametrize(("contract", "problem"), [
    ({"inputs": [{"name": "pixels", "datatype": "FP32", "dims": [-1, 784]}]},
     "field 'inputs[0].name' declares 'pixels', which the model does not have; its inputs are ['input']"),
    ({"inputs": [{"name": "input", "datatype": "FP16", "dims": [-1, 784]}]},
     "field 'inputs[0].datatype' declares FP16 for 'input', the model has FP32"),
    ({"outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, 1000]}]},
     "field 'outputs[0].dims' declares [-1, 1000] for 'logits', the model has [-1, 10]"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "dims": [8, 784]}]},
     "field 'inputs[0].dims' declares [8, 784] for 'input', the model has [-1, 784]"),
])
def test_a_version_that_breaks_the_contract_does_not_load(tmp_path: Path, contract: dict, problem: str) -> None:
    save(mlp(), tmp_path, "model", 1)
    save(mlp(seed=2), tmp_path, "model", 2)
    (tmp_path / "model" / "config.yaml").write_text(yaml.safe_dump({"version_policy": "all", **contract}))
    states = _load(tmp_path, "model")
    for version in (1, 2):
        state, error = states[version]
        assert state == State.END
        assert error is not None and problem in error


def test_only_the_breaking_version_is_refused(tmp_path: Path) -> None:
    save(mlp(), tmp_path, "model", 1)
    save(multi_io(), tmp_path, "model", 2)
    (tmp_path / "model" / "config.yaml").write_text(yaml.safe_dump({"version_policy": "all", **MLP_CONTRACT}))
    states = _load(tmp_path, "model")
    assert states[1] == (State.AVAILABLE, "")
    assert states[2][0] == State.END and "model 'model' version 2: field 'inputs[0].name'" in (states[2][1] or "")


def test_an_unknown_datatype_is_a_config_error(tmp_path: Path) -> None:
    save(mlp(), tmp_path, "model", 1)
    (tmp_path / "model" / "config.yaml").write_text(yaml.safe_dump(
        {"inputs": [{"name": "input", "datatype": "FLOAT", "dims": [-1, 784]}]}))

    async def load() -> str | None:
        registry = ModelRegistry(tmp_path)
        return (await registry.load("model")).error

    error = asyncio.run(load())
    assert error is not None and "field 'inputs.0.datatype'" in error and "unknown datatype 'FLOAT'" in error


def test_publishing_declares_the_contract_from_the_existing_version_and_keeps_it(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture) -> None:
    save(mlp(), tmp_path, "mlp", 1)
    # a variant that changes the input datatype breaks the contract that version 1 implies
    assert main(["optimize", "mlp", "--repository", str(tmp_path), "--kind", "fp16", "--fp16-io"]) == 1
    error = capsys.readouterr().err
    assert "breaks the model's declared contract; nothing was written" in error
    assert "declares FP32 for 'input', the model has FP16" in error
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1"]
    # one that keeps it is published, and the contract is written down
    assert main(["optimize", "mlp", "--repository", str(tmp_path), "--kind", "fp16"]) == 0
    config = yaml.safe_load((tmp_path / "mlp" / "config.yaml").read_text())
    assert {key: config[key] for key in ("inputs", "outputs")} == MLP_CONTRACT
    assert _load(tmp_path, "mlp")[2] == (State.AVAILABLE, "")


def test_a_fixed_shape_model_declares_fixed_dims(tmp_path: Path) -> None:
    save(fixed_shape(), tmp_path / "repo", "fixed", 1)
    assert main(["optimize", "fixed", "--repository", str(tmp_path / "repo")]) == 0
    config = yaml.safe_load((tmp_path / "repo" / "fixed" / "config.yaml").read_text())
    assert config["inputs"] == [{"name": "x", "datatype": "FP32", "dims": [2, 3]}]
