"""Conversion of trained models to ONNX, with proof of parity, written into a model repository as a version."""
