"""TF Serving's JSON forms of model status and signature metadata, shared by its REST and gRPC front ends."""

from __future__ import annotations

from typing import Any

from ortserve.runtime.model import ServedVersion, State
from ortserve.runtime.signature import Signature, TensorSpec

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


def version_status(served: ServedVersion) -> dict[str, Any]:
    failed = served.state is State.END and served.error
    return {
        "version": str(served.version),
        "state": served.state.value,
        "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": served.error},
    }


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": spec.type.tf,
        "tensor_shape": {"dim": [{"size": str(dim), "name": ""} for dim in spec.shape], "unknown_rank": False},
        "name": spec.name,
    }


def signature_def(signature: Signature) -> dict[str, Any]:
    return {
        "inputs": {spec.name: _tensor_info(spec) for spec in signature.inputs},
        "outputs": {spec.name: _tensor_info(spec) for spec in signature.outputs},
        "method_name": PREDICT_METHOD,
    }
