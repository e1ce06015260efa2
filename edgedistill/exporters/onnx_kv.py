"""A causal LM as optimum directories with a KV cache: teacher.onnx-kv/ and student.onnx-kv/ (the student with
its dynamic int8 twin), each file checked against torch on a bare ONNX Runtime session: fp32 by greedy
decoding, int8 by teacher-forced next tokens (a greedy sequence drifts once a near-tie flips)."""

from __future__ import annotations

from edgedistill import io
from edgedistill.errors import RefusedError
from edgedistill.exporters import EXPORTERS, FP32_MODULE, Artifact, Exporter

FP32_MIN_MATCH = 0.99  # greedy tokens an fp32 export must decode as torch does (a near-tie may flip one)


@EXPORTERS.register("onnx-kv")
class OnnxKV(Exporter):
    name = "onnx-kv"
    format, kinds, suffix, runtime = "onnx", ("onnx-fp32", "onnx-int8"), ".onnx", "onnxruntime-kv"
    tasks, needs, always = ("text-generation",), (FP32_MODULE,), True

    def export(self, job):
        from edgedistill.generative import kv_onnx, lm
        from edgedistill.runtimes.onnxruntime import REFERENCE, int8_execution
        from edgedistill.runtimes.onnxruntime_kv import next_tokens
        from edgedistill.tasks.causal_lm import next_token
        from edgedistill.tasks.causal_lm import prompts as _prompts

        cfg, data = job.cfg, job.ctx.data
        tokenizer = lm.load_tokenizer(job.ctx.recipe.teacher.path)
        p_ids, _ = _prompts(job.ctx.recipe, data.x_test.cpu(), data.y_test.cpu(), 16)
        for role in ("teacher", "student"):
            module = job.modules[role]
            directory = kv_onnx.export(module, tokenizer, job.stage_dir / f"{role}.onnx-kv", cfg.opset,
                                       int8=role == "student", weight_range=job.target.int8_weight_range)
            files = [("onnx-fp32", kv_onnx.FP32_FILE, "fp32")]
            files += [("onnx-int8", kv_onnx.INT8_FILE, "int8")] if role == "student" else []
            for kind, name, precision in files:
                if precision == "fp32":
                    match = kv_onnx.check_matches_torch(module, directory, p_ids, file_name=name)
                    measure = "greedy tokens"
                else:  # in the target's int8 arithmetic
                    ids, lengths = data.x_test[:200].cpu(), data.y_test[:200].cpu()
                    reference = int8_execution(job.target) == REFERENCE
                    match = float((next_tokens(directory / name, ids, lengths, reference)
                                   == next_token(module, ids, lengths)[0]).float().mean())
                    measure = "teacher-forced next tokens" + (" (reference execution)" if reference else "")
                floor = FP32_MIN_MATCH if precision == "fp32" else cfg.int8_min_agreement
                if match < floor:
                    key = "stages.export.int8_min_agreement " if precision == "int8" else ""
                    refused = io.set_aside(directory)  # the whole directory: optimum loads it by its name
                    raise RefusedError(f"parity: {job.rel(directory / name)} agrees with the torch {role} on "
                                       f"{match:.1%} of {measure} (< {key}{floor}); not trusted, kept as "
                                       f"{job.rel(refused)}")
                rung = {"from": f"{role} fp32 (torch)", "to": f"{role} {precision} (onnx, KV cache)",
                        "top1_agreement": match, "max_abs": None, "measure": measure}
                file_name = f", file_name='{name}')" if name != kv_onnx.FP32_FILE else ")"
                yield Artifact(role, kind, precision, directory / name, self.name, self.runtime, parity=[rung], fields={
                    "directory": job.rel(directory),
                    "loader": "optimum.onnxruntime.ORTModelForCausalLM.from_pretrained(directory" + file_name,
                    **({"quantization": "dynamic-ort"} if precision == "int8" else {})})

    def usage(self, spec) -> dict:
        return {"inputs": ["input_ids", "attention_mask", "position_ids", "past_key_values.<layer>.key/value"],
                "outputs": ["logits", "present.<layer>.key/value"], "pad_id": spec.pad_id}

    def estimate_file(self, artifact, target):
        return None  # the estimator reads a classifier's graph, not a decoder's loop over its cache
