"""Exporters: ONNX (fp32 and int8 QDQ), ONNX Runtime Mobile (.ort) and Core ML (.mlpackage)."""
