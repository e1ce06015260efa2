"""ONNX int8 of the student: the QAT model's own graph, or when QAT is off ONNX Runtime PTQ (static for CNNs,
dynamic for transformers), weights in the range the target's kernels add up exactly (7-bit on x86 without
VNNI). Judged in the target's int8 arithmetic (parity.int8_rung); a file ONNX Runtime runs no integer kernel
for is refused."""

from __future__ import annotations

from edgedistill import io, parity, quantize
from edgedistill.data.split import split_of
from edgedistill.exporters import CLASSIFICATION, EXPORTERS, INT8_MODULE, ONNX_FILE, Artifact, Exporter
from edgedistill.exporters import onnx as onnx_lib
from edgedistill.families import family_of
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.tasks.fitting import training_data


@EXPORTERS.register("onnx-int8")
class OnnxInt8(Exporter):
    name = "onnx-int8"
    format, kinds, suffix, runtime = "onnx", ("onnx-int8",), ".onnx", "onnxruntime"
    tasks, needs, always = CLASSIFICATION, (INT8_MODULE, ONNX_FILE), True
    ships_to, checked_on = ("onnxruntime",), ("onnxruntime", "ort-mobile")

    def export(self, job):
        cfg, target, state = job.cfg, job.target, job.state
        path = job.stage_dir / "student.int8.onnx"
        fp32_file = job.find("onnx-fp32").path
        weight_range = target.int8_weight_range
        rungs = []
        if job.quantized is not None:
            from edgedistill.training import predict

            onnx_lib.export_onnx(job.quantized, job.spec, path, cfg.opset, int8=True)
            reference = predict(job.quantized, job.x, set_mode=quantize.set_mode).numpy()
            ref_name, method, max_rel = "student int8 (torch)", "qat-pt2e", cfg.int8_max_rel
            rungs.append(parity.compare(job.torch_logits("student"), reference, ("student fp32 (torch)", ref_name)))
            rungs += state.records.get("qat", {}).get("parity", [])  # fake-quant -> int8, measured by the qat stage
        else:
            reference, ref_name, max_rel = job.torch_logits("student"), "student fp32 (torch)", None
            method = self._ptq(job, fp32_file, path, weight_range)
        rung = parity.int8_rung(job.ctx, reference, path, (ref_name, "student int8 (onnx)"),
                                (cfg.int8_min_agreement, max_rel), job.file_logits, path)
        kernels = sorted(set(ortr.optimized_op_types(path)) & ortr.INTEGER_KERNELS)
        if not kernels:
            parity.refuse(path, job.out, lambda name: f"export {name}: ONNX Runtime runs no integer kernel for it "
                          "(its optimized graph is all float), so it would be int8 in name only; export with torch 2.13")
        plan = {"precision_plan": state.plan.summary()} if state.plan is not None else {}
        yield Artifact("student", "onnx-int8", "int8", path, self.name, self.runtime, parity=[*rungs, rung], fields={
            "quantization": method, "parity_max_abs": rung["max_abs"], "integer_kernels": kernels,
            "weight_range": list(weight_range), "int8_arithmetic": target.arithmetic,
            "parity_arithmetic": rung["arithmetic"], **plan})

    @staticmethod
    def _ptq(job, fp32_file, path, weight_range) -> str:
        """Post-training int8 of the fp32 file; returns the method's name."""
        if family_of(job.state.student.arch).int8 == "dynamic":  # integer MatMuls, activations quantized at run time
            quantize.dynamic_onnx(fp32_file, path, weight_range)
            return "dynamic-ort"
        import onnx

        train = split_of(training_data(job.ctx, job.state).x_train)  # a data-free run: its transfer set
        calibration = train.head(512).cpu().numpy()
        plan = job.state.plan
        if plan is not None and not job.state.all_fp32:  # the precision plan's int8 blocks only
            nodes = plan.nodes(onnx.load(str(fp32_file)))
            quantize.ptq_onnx(fp32_file, path, calibration, nodes_to_quantize=nodes, weight_range=weight_range)
            method = "ptq-ort-static"
        else:  # no plan, or an all-fp32 one: every layer (the int8 file stays available for its size)
            ptq = quantize.nncf_ptq_onnx if job.cfg.ptq == "nncf" else quantize.ptq_onnx
            ptq(fp32_file, path, calibration, weight_range=weight_range)
            method = "ptq-nncf" if job.cfg.ptq == "nncf" else "ptq-ort-static"
        io.write_bytes(path, onnx_lib.fuse_friendly_qdq(onnx.load(str(path))).SerializeToString())
        return method
