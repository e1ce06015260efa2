"""Runtimes behind small interfaces: ONNX Runtime (and its mobile .ort format) on this machine."""
