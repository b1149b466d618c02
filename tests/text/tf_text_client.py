"""TF Serving client code as users write it for a text model: tf.make_tensor_proto of Python strings.

Usage: python tf_text_client.py PORT MODEL OUTPUT_NAME OUTPUT.npy TEXT...; prints the signature's input dtype.
"""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

port, model, output_name, output_path, *texts = sys.argv[1:]
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
request = predict_pb2.PredictRequest()
request.model_spec.name = model
request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts))
result = stub.Predict(request)
np.save(output_path, tf.make_ndarray(result.outputs[output_name]), allow_pickle=True)

metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
metadata_request.model_spec.name = model
metadata_request.metadata_field.append("signature_def")
signatures = get_model_metadata_pb2.SignatureDefMap()
stub.GetModelMetadata(metadata_request).metadata["signature_def"].Unpack(signatures)
signature = signatures.signature_def["serving_default"]
print(json.dumps({"input_dtype": tf.dtypes.as_dtype(signature.inputs["text"].dtype).name,
                  "outputs": sorted(signature.outputs)}))
