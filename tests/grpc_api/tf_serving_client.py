"""The TF Serving client code users already have, unchanged but for the port: tensorflow-serving-api + TF.

Usage: python tf_serving_client.py PORT INPUT.npy OUTPUT.npy; prints a JSON summary of status and metadata.
"""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

port, input_path, output_path = sys.argv[1:4]
host = "127.0.0.1"
model_name = "mlp"
input_data = np.load(input_path)

channel = grpc.insecure_channel(f"{host}:{port}")
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
request = predict_pb2.PredictRequest()
request.model_spec.name = model_name
request.inputs["input"].CopyFrom(tf.make_tensor_proto(input_data, shape=list(input_data.shape)))
result = stub.Predict(request)
np.save(output_path, tf.make_ndarray(result.outputs["logits"]))

listed = predict_pb2.PredictRequest()
listed.model_spec.name = model_name
listed.model_spec.version.value = 1
listed.inputs["input"].CopyFrom(tf.make_tensor_proto(input_data[:1].tolist(), dtype=tf.float32))
listed_result = tf.make_ndarray(stub.Predict(listed).outputs["logits"])

metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
metadata_request.model_spec.name = model_name
metadata_request.metadata_field.append("signature_def")
metadata = stub.GetModelMetadata(metadata_request)
signatures = get_model_metadata_pb2.SignatureDefMap()
metadata.metadata["signature_def"].Unpack(signatures)

status_request = get_model_status_pb2.GetModelStatusRequest()
status_request.model_spec.name = model_name
status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request)

print(json.dumps({
    "answered_version": result.model_spec.version.value,
    "listed_first_row": listed_result[0].tolist(),
    "input_shape": [d.size for d in signatures.signature_def["serving_default"].inputs["input"].tensor_shape.dim],
    "input_dtype": tf.dtypes.as_dtype(signatures.signature_def["serving_default"].inputs["input"].dtype).name,
    "states": [get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in status.model_version_status],
}))
