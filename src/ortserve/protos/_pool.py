"""The descriptor pool of ortserve's generated protobuf modules.

ortserve's protos declare TensorFlow Serving's and Triton's message names (tensorflow.TensorProto,
inference.ModelInferRequest, ...). In protobuf's default pool they would clash with TensorFlow's or tritonclient's
own modules imported into the same process, so generate_protos.sh points every generated module here instead.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _well_known in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_well_known.DESCRIPTOR.serialized_pb)
