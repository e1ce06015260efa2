"""export: ONNX fp32 (teacher and student) and int8, .ort for Android, .mlpackage for iOS. Every file is
checked against the model it came from on the held-out inputs; beyond tolerance the run stops (exit 3)."""

from __future__ import annotations

import copy

import numpy as np

from edgedistill import __version__, io, quantize
from edgedistill.errors import RefusedError
from edgedistill.exporters import coreml, ort_mobile
from edgedistill.exporters.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, fuse_friendly_qdq
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.targets import CoreMLSettings
from edgedistill.training import predict

USES_TARGET = True
MAIN_ONLY = True  # under torchrun, rank 0 alone


def _compare(reference: np.ndarray, other: np.ndarray, names: tuple[str, str]) -> dict:
    max_abs = float(np.abs(reference - other).max())
    return {"from": names[0], "to": names[1],
            "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean()),
            "max_abs": max_abs, "max_rel": max_abs / max(float(np.abs(reference).max()), 1e-12)}


def _check(rung: dict, artifact: str, max_abs: float | None, min_agreement: float | None, field: str,
           max_rel: float | None = None) -> None:
    if max_abs is not None and rung["max_abs"] > max_abs:
        raise RefusedError(f"parity: {artifact} differs from {rung['from']} by {rung['max_abs']:.3g} "
                           f"(> export.{field}_max_abs {max_abs}); the artifact is not trusted")
    if max_rel is not None and rung["max_rel"] > max_rel:
        raise RefusedError(f"parity: {artifact} differs from {rung['from']} by {rung['max_rel']:.1%} of its largest "
                           f"logit (> export.{field}_max_rel {max_rel}); the artifact is not trusted")
    if min_agreement is not None and rung["top1_agreement"] < min_agreement:
        raise RefusedError(f"parity: {artifact} agrees with {rung['from']} on {rung['top1_agreement']:.1%} of "
                           f"held-out inputs (< export.{field}_min_agreement {min_agreement}); the artifact is not trusted")


def _on_cpu(module):
    """A CPU copy: the artifacts run on CPUs, and a GPU reference (TF32 convolutions) would differ from them."""
    return copy.deepcopy(module).cpu()


def run(ctx, state, stage_dir):
    cfg, target, spec = ctx.recipe.stages.export, ctx.target, ctx.data.spec
    x = ctx.data.x_test.cpu()
    x_np = x.numpy()
    rel = lambda p: str(p.relative_to(ctx.out))  # noqa: E731
    artifacts, parity = [], []

    computed: dict = {}

    def onnx_logits(path):  # each file runs over the held-out set once, whichever rungs compare it
        if path not in computed:
            computed[path] = ortr.logits(ortr.session(path, ortr.host_threads(2)), x_np)
        return computed[path]

    def add(role, kind, path, **extra):
        artifacts.append({"role": role, "kind": kind, "path": rel(path), "size_bytes": io.dir_size(path), **extra})
        ctx.log(f"    wrote {rel(path)} ({io.dir_size(path):,} bytes)")

    # fp32: teacher (for comparison) and student
    torch_fp32 = {}
    fp32 = {"teacher": _on_cpu(state.teacher.module).eval(), "student": _on_cpu(state.student.module).eval()}
    quantized = _on_cpu(state.quantized) if state.quantized is not None else None
    for role, module in fp32.items():
        path = stage_dir / f"{role}.fp32.onnx"
        export_onnx(module, spec, path, cfg.opset)
        torch_fp32[role] = predict(module, x).numpy()
        rung = _compare(torch_fp32[role], onnx_logits(path), (f"{role} fp32 (torch)", f"{role} fp32 (onnx)"))
        _check(rung, rel(path), cfg.fp32_max_abs, None, "fp32")
        parity.append(rung)
        add(role, "onnx-fp32", path, precision="fp32", parity_max_abs=rung["max_abs"])
    parity.insert(0, _compare(torch_fp32["teacher"], torch_fp32["student"], ("teacher fp32 (torch)", "student fp32 (torch)")))

    # int8: the QAT model's own graph, or ONNX Runtime static PTQ when QAT is off
    int8_path = stage_dir / "student.int8.onnx"
    if quantized is not None:
        export_onnx(quantized, spec, int8_path, cfg.opset, int8=True)
        reference = predict(quantized, x, set_mode=quantize.set_mode).numpy()
        ref_name, method, max_rel = "student int8 (torch)", "qat-pt2e", cfg.int8_max_rel
        parity.append(_compare(torch_fp32["student"], reference, ("student fp32 (torch)", ref_name)))
        parity += state.records.get("qat", {}).get("parity", [])  # fake-quant -> int8, measured by the qat stage
    else:
        import onnx

        ptq = quantize.nncf_ptq_onnx if cfg.ptq == "nncf" else quantize.ptq_onnx
        ptq(stage_dir / "student.fp32.onnx", int8_path, ctx.data.x_train[:512].cpu().numpy())
        io.write_bytes(int8_path, fuse_friendly_qdq(onnx.load(str(int8_path))).SerializeToString())
        method = "ptq-nncf" if cfg.ptq == "nncf" else "ptq-ort-static"
        reference, ref_name, max_rel = torch_fp32["student"], "student fp32 (torch)", None
    rung = _compare(reference, onnx_logits(int8_path), (ref_name, "student int8 (onnx)"))
    _check(rung, rel(int8_path), None, cfg.int8_min_agreement, "int8", max_rel)
    parity.append(rung)
    kernels = sorted(set(ortr.optimized_op_types(int8_path)) & ortr.INTEGER_KERNELS)
    if not kernels:
        raise RefusedError(f"export {rel(int8_path)}: ONNX Runtime runs no integer kernel for it (its optimized "
                           "graph is all float), so it would be int8 in name only; export with torch 2.13")
    add("student", "onnx-int8", int8_path, precision="int8", quantization=method, parity_max_abs=rung["max_abs"],
        integer_kernels=kernels)
    int8_target = target.precision in ("int8", "w8a8")

    if "ort" in cfg.formats:
        source = int8_path if int8_target else stage_dir / "student.fp32.onnx"
        ort_file, config = ort_mobile.to_ort(source, stage_dir / "ort", target.arch)
        rung = _compare(onnx_logits(source), onnx_logits(ort_file),
                        (f"student {'int8' if int8_target else 'fp32'} (onnx)", "student (ort)"))
        if int8_target:
            _check(rung, rel(ort_file), None, cfg.int8_min_agreement, "int8", cfg.int8_max_rel)
        else:
            _check(rung, rel(ort_file), cfg.fp32_max_abs, None, "fp32")
        parity.append(rung)
        add("student", "ort", ort_file, precision="int8" if int8_target else "fp32", parity_max_abs=rung["max_abs"],
            required_operators=rel(config), target_platform=target.arch)

    if "coreml" in cfg.formats:
        w8a8 = int8_target and quantized is not None
        settings = target.coreml or CoreMLSettings()
        path = stage_dir / "student.mlpackage"
        coreml.to_coreml(
            quantized if w8a8 else fp32["student"], spec, path,
            deployment_target=settings.minimum_deployment_target, compute_units=settings.compute_units,
            precision="w8a8" if w8a8 else "fp16", version=__version__,
            description=f"{ctx.recipe.name}: {spec.task} student distilled for {target.name}",
        )
        info = coreml.inspect(path)
        if info["labels"] != list(spec.labels):
            raise RefusedError(f"export {rel(path)}: the package's class labels do not match the data's")
        add("student", "coreml", path, precision="w8a8" if w8a8 else "fp16", parity_max_abs=None, coreml=info)

    batch = "batch"
    state.records["export"] = {
        "name": "export", "artifacts": artifacts, "parity": parity,
        "usage": {
            "inputs": [{"name": INPUT_NAME, "shape": [batch, *spec.input_shape], "dtype": "float32"}],
            "outputs": [{"name": OUTPUT_NAME, "shape": [batch, spec.num_classes], "dtype": "float32"}],
            "labels": list(spec.labels), "mean": list(spec.mean), "std": list(spec.std),
            "coreml_input": coreml.INPUT_NAME, "coreml_outputs": list(coreml.OUTPUTS),
        },
    }
    return state


def restore(ctx, state, stage_dir):
    return state
