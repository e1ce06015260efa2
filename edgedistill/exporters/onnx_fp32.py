"""ONNX fp32, teacher (for comparison) and student: the file every other format of a classifier starts from.
Each is checked against its torch model on the held-out inputs (stages.export.fp32_max_abs)."""

from __future__ import annotations

from edgedistill import parity
from edgedistill.exporters import CLASSIFICATION, EXPORTERS, FP32_MODULE, Artifact, Exporter
from edgedistill.exporters import onnx as onnx_lib


@EXPORTERS.register("onnx-fp32")
class OnnxFp32(Exporter):
    name = "onnx-fp32"
    format, kinds, suffix, runtime = "onnx", ("onnx-fp32",), ".onnx", "onnxruntime"
    tasks, needs, always = CLASSIFICATION, (FP32_MODULE,), True
    ships_to, checked_on = ("onnxruntime",), ("onnxruntime", "ort-mobile")

    def export(self, job):
        for role in ("teacher", "student"):
            path = job.stage_dir / f"{role}.fp32.onnx"
            onnx_lib.export_onnx(job.modules[role], job.spec, path, job.cfg.opset)
            rung = parity.compare(job.torch_logits(role), job.file_logits(path),
                                  (f"{role} fp32 (torch)", f"{role} fp32 (onnx)"))
            parity.check_fp32(rung, path, job.cfg, job.out)
            # the ladder starts with the two torch models
            start = [parity.compare(job.torch_logits("teacher"), job.torch_logits("student"),
                                    ("teacher fp32 (torch)", "student fp32 (torch)"))] if role == "teacher" else []
            yield Artifact(role, "onnx-fp32", "fp32", path, self.name, self.runtime, parity=[*start, rung],
                           fields={"parity_max_abs": rung["max_abs"]})

    def usage(self, spec) -> dict:
        """Input/output names, shapes and preprocessing."""
        text = spec.task == "text-classification"
        usage = {"inputs": [{"name": onnx_lib.INPUT_NAME, "shape": ["batch", *spec.input_shape],
                             "dtype": "int64" if text else "float32"}],
                 "outputs": [{"name": onnx_lib.OUTPUT_NAME, "shape": ["batch", spec.num_classes], "dtype": "float32"}],
                 "labels": list(spec.labels)}
        if text:
            return {**usage, "pad_id": spec.pad_id, "sequence_length": spec.input_shape[0]}
        return {**usage, "mean": list(spec.mean), "std": list(spec.std)}
