"""What the ExecuTorch and LiteRT exporters share: an fp32 file and an int8 one in the runtime's own PT2E
scheme, each run by the runtime on the held-out inputs and judged against the torch model it came from."""

from __future__ import annotations

from edgedistill.errors import RefusedError
from edgedistill.exporters import INT8_PRECISIONS, Artifact, Exporter, onnx_twin


class MobileExporter(Exporter):
    """Subclasses set `kind` and `scheme` and implement write_fp32, quantize, write_int8 and describe."""

    kind = ""  # the report kind of its fp32 and int8 artifacts
    scheme = ""  # the "quantization" field of its int8 artifact

    def write_fp32(self, module, example, path) -> dict:
        """Write `module`; returns extra record fields."""
        raise NotImplementedError

    def quantize(self, module, example, calibration):
        """(a PT2E-converted module, what write_int8 needs with it)."""
        raise NotImplementedError

    def write_int8(self, quantized, handle, example, path) -> dict:
        raise NotImplementedError

    def describe(self, path) -> dict:
        """Record fields read back from the written file ("graph", "io")."""
        raise NotImplementedError

    def export(self, job):
        from edgedistill import parity
        from edgedistill.quantize import set_mode
        from edgedistill.runtimes import RUNTIMES
        from edgedistill.training import predict

        cfg, spec, runtime = job.cfg, job.spec, RUNTIMES.get(self.runtime)
        if not runtime.available():
            raise RefusedError(f"export: {runtime.unavailable}")
        example = spec.example_input(1)
        wants_int8 = job.target.precision in INT8_PRECISIONS
        path = job.stage_dir / f"student.fp32{self.suffix}"
        fields = self.write_fp32(job.modules["student"], example, path)
        artifact = self.artifact("fp32", path, not wants_int8, fields)
        rung = parity.compare(job.torch_logits("student"), runtime.outputs(artifact, job.x.numpy(), spec),
                              ("student fp32 (torch)", f"student fp32 ({self.name})"))
        parity.check_fp32(rung, path, cfg, job.out)
        yield judged(artifact, rung)

        module, weights = job.int8_weights
        calibration = job.calibration()
        quantized, handle = self.quantize(module, example, calibration)
        path = job.stage_dir / f"student.int8{self.suffix}"
        fields = self.write_int8(quantized, handle, example, path)
        artifact = self.artifact("int8", path, wants_int8, {
            "quantization": self.scheme, "weights_from": weights,
            "calibration": f"the first {len(calibration)} examples of the training split", **fields})
        reference = predict(quantized, job.x, set_mode=set_mode).numpy()
        torch_int8 = f"student int8 (torch, {self.name} scheme)"
        rung = parity.compare(reference, runtime.outputs(artifact, job.x.numpy(), spec),
                              (torch_int8, f"student int8 ({self.name})"))
        parity.check(rung, path, None, cfg.int8_min_agreement, "int8", cfg.int8_max_rel, job.out)
        yield judged(artifact, rung, parity.compare(job.torch_logits("student"), reference,
                                                    ("student fp32 (torch)", torch_int8)))

    def source_among(self, role, precision, earlier):
        """Its ONNX twin: the graph the target's latency is estimated from."""
        return onnx_twin(role, precision, earlier)

    def artifact(self, precision, path, for_target, fields, kind=None) -> Artifact:
        return Artifact("student", kind or self.kind, precision, path, self.name, self.runtime,
                        for_target=for_target, fields={**fields, **self.describe(path)})


def judged(artifact: Artifact, rung: dict, *before: dict) -> Artifact:
    """`artifact` with its parity rungs (informative ones first, the judging one last)."""
    artifact.parity += [*before, rung]
    artifact.fields["parity_max_abs"] = rung["max_abs"]
    return artifact
