"""TF Serving Predict requests built by hand from its protos, as its clients send them (not with ortserve's own
encoder): for the tests that need a float input over TF Serving gRPC while they prove something else (rollouts,
routing, groups, overload, Ray). tests/grpc_api/test_grpc_tfserving.py covers the encodings themselves."""

from __future__ import annotations

import numpy as np

from ortserve.protos.tensorflow.core.framework.tensor_pb2 import TensorProto
from ortserve.protos.tensorflow_serving.apis import predict_pb2

DT_FLOAT = 1


def predict_request(model: str, batch: np.ndarray, input_name: str = "input") -> predict_pb2.PredictRequest:
    """A Predict request for `model` with one float32 input, its bytes in `tensor_content`."""
    if batch.dtype != np.float32:
        raise TypeError(f"a float32 batch is expected, not {batch.dtype}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs[input_name]
    tensor.CopyFrom(TensorProto(dtype=DT_FLOAT, tensor_content=np.ascontiguousarray(batch).tobytes()))
    for size in batch.shape:
        tensor.tensor_shape.dim.add(size=size)
    return request
