"""Small ONNX models built from code, for the bundled example repository, the tests and the benchmarks."""
