"""A model version's signature against the inputs and outputs its config.yaml declares."""

from __future__ import annotations

from ortserve.errors import ConfigError
from ortserve.repository.config import ModelConfig, TensorDeclaration
from ortserve.runtime.signature import Signature, TensorSpec


def declaration(spec: TensorSpec) -> TensorDeclaration:
    return TensorDeclaration(name=spec.name, datatype=spec.type.v2, dims=list(spec.shape))


def declare(signature: Signature) -> dict[str, list[dict[str, object]]]:
    """The config.yaml `inputs` and `outputs` entries that describe this signature."""
    return {kind: [declaration(spec).model_dump() for spec in specs]
            for kind, specs in (("inputs", signature.inputs), ("outputs", signature.outputs))}


def check_contract(model: str, version: int | str, config: ModelConfig, signature: Signature) -> None:
    """Every declared tensor must exist with the declared datatype and shape (-1 where the model is dynamic)."""
    for kind, declared, specs in (("inputs", config.inputs, signature.inputs),
                                  ("outputs", config.outputs, signature.outputs)):
        actual = {spec.name: spec for spec in specs}
        for index, want in enumerate(declared):
            field = f"{kind}[{index}]"
            spec = actual.get(want.name)
            if spec is None:
                raise ConfigError(f"model {model!r} version {version}: field '{field}.name' declares {want.name!r}, "
                                  f"which the model does not have; its {kind} are {sorted(actual)}")
            if spec.type.v2 != want.datatype:
                raise ConfigError(f"model {model!r} version {version}: field '{field}.datatype' declares "
                                  f"{want.datatype} for {want.name!r}, the model has {spec.type.v2}")
            if want.dims != list(spec.shape):  # dynamic dimensions are -1 on both sides
                raise ConfigError(f"model {model!r} version {version}: field '{field}.dims' declares {want.dims} "
                                  f"for {want.name!r}, the model has {list(spec.shape)}")
