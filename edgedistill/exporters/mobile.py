"""What the ExecuTorch and LiteRT exporters share: an fp32 file and an int8 one in the runtime's own PT2E
scheme (the qat stage's model when it trained in that scheme, else post-training quantization), each run by the
runtime on the held-out inputs and judged against the torch model it came from."""

from __future__ import annotations

from typing import NamedTuple

from edgedistill.errors import RefusedError
from edgedistill.exporters import INT8_PRECISIONS, Artifact, Exporter, onnx_twin


class Int8Source(NamedTuple):
    module: object  # a PT2E-converted int8 graph
    handle: object  # what write_int8 needs with it
    name: str  # its name in the parity ladder
    fields: dict  # for the artifact's record
    rungs: list  # parity measured before export (the qat stage's fake-quant -> int8)


class MobileExporter(Exporter):
    """Subclasses set `kind` and `scheme` and implement write_fp32, quantize, write_int8 and describe."""

    kind = ""  # the report kind of its fp32 and int8 artifacts
    scheme = ""  # the "quantization" field of its post-training int8 artifact
    qat_scheme = "xnnpack-s8"  # the qat stage's scheme (quantize.SCHEMES) whose int8 model it lowers as it is

    def missing(self):
        from edgedistill.runtimes import RUNTIMES

        runtime = RUNTIMES.get(self.runtime)  # the converter and the runtime that checks its files come together
        return None if runtime.available() else runtime.unavailable

    def write_fp32(self, module, example, path) -> dict:
        """Write `module`; returns extra record fields."""
        raise NotImplementedError

    def quantize(self, module, example, calibration):
        """(a PT2E-converted module, what write_int8 needs with it)."""
        raise NotImplementedError

    def from_qat(self, quantized):
        """(the qat stage's converted int8 module as write_int8 takes it, its handle)."""
        return quantized, None

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
        if why := self.missing():
            raise RefusedError(f"export: {why}")
        example = spec.example_input(1)
        wants_int8 = job.target.precision in INT8_PRECISIONS
        path = job.stage_dir / f"student.fp32{self.suffix}"
        fields = self.write_fp32(job.modules["student"], example, path)
        artifact = self.artifact("fp32", path, not wants_int8, fields)
        rung = parity.compare(job.torch_logits("student"), runtime.outputs(artifact, job.x.numpy(), spec),
                              ("student fp32 (torch)", f"student fp32 ({self.name})"))
        parity.check_fp32(rung, path, cfg, job.out)
        yield judged(artifact, rung)

        int8 = self._int8_source(job, example)
        path = job.stage_dir / f"student.int8{self.suffix}"
        fields = {**int8.fields, **self.write_int8(int8.module, int8.handle, example, path)}
        artifact = self.artifact("int8", path, wants_int8, fields)
        reference = predict(int8.module, job.x, set_mode=set_mode).numpy()
        rung = parity.compare(reference, runtime.outputs(artifact, job.x.numpy(), spec),
                              (int8.name, f"student int8 ({self.name})"))
        parity.check(rung, path, None, cfg.int8_min_agreement, "int8", cfg.int8_max_rel, job.out)
        yield judged(artifact, rung, parity.compare(job.torch_logits("student"), reference,
                                                    ("student fp32 (torch)", int8.name)), *int8.rungs)

    def _int8_source(self, job, example) -> Int8Source:
        """The qat stage's own int8 model when it trained in this runtime's scheme, else this runtime's
        post-training quantizer on the student's weights (QAT-fine-tuned in another scheme, or fp32)."""
        from edgedistill.quantize import SCHEMES

        if job.qat_scheme == self.qat_scheme:
            module, handle = self.from_qat(job.quantized)
            return Int8Source(module, handle, "student int8 (torch)", {
                "quantization": f"{self.qat_scheme}-qat (trained by the qat stage; {SCHEMES[self.qat_scheme]})",
                "weights_from": "the qat stage's int8 model"}, job.state.records.get("qat", {}).get("parity", []))
        student, weights = job.int8_weights
        calibration = job.calibration()
        module, handle = self.quantize(student, example, calibration)
        return Int8Source(module, handle, f"student int8 (torch, {self.name} scheme)", {
            "quantization": self.scheme, "weights_from": weights,
            "calibration": f"the first {len(calibration)} examples of the training split"}, [])

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
