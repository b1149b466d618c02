"""Graph optimization, quantization, accuracy evaluation and tuning of ONNX models for the target machine."""
