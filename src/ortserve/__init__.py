"""ortserve: serve ONNX models over TF Serving and KServe V2 / Triton APIs."""

__version__ = "0.1.0"
