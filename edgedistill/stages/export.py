"""export: ONNX fp32 (teacher and student) and int8, .ort for Android, .mlpackage for iOS, and for Hugging
Face students an optimum-loadable ONNX directory. Every file is checked against the model it came from on the
held-out inputs; beyond tolerance the run stops (exit 3)."""

from __future__ import annotations

import copy

import numpy as np

from edgedistill import __version__, io, quantize
from edgedistill.errors import RefusedError
from edgedistill.exporters import coreml, hf_onnx, ort_mobile
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
    if spec.is_lm:
        from edgedistill.stages import lm

        state.records["export"] = lm.export(ctx, state, stage_dir)
        return state
    x = ctx.data.x_test.cpu()
    x_np = x.numpy()
    rel = lambda p: str(p.relative_to(ctx.out))  # noqa: E731
    artifacts, parity = [], []

    computed: dict = {}

    def onnx_logits(path):  # each file runs over the held-out set once, whichever rungs compare it
        if path not in computed:
            computed[path] = ortr.logits(ortr.session(path, ortr.host_threads(2)), x_np, pad_id=spec.pad_id or 0)
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
    if spec.is_text and "hf-onnx" in cfg.formats:  # optimum's layout; Hugging Face students only
        parity += _hf_directory(ctx, fp32["student"], torch_fp32["student"], stage_dir, onnx_logits, add)

    # int8: the QAT model's own graph, or when QAT is off ONNX Runtime PTQ: static for CNNs, dynamic for transformers
    int8_path = stage_dir / "student.int8.onnx"
    if quantized is not None:
        export_onnx(quantized, spec, int8_path, cfg.opset, int8=True)
        reference = predict(quantized, x, set_mode=quantize.set_mode).numpy()
        ref_name, method, max_rel = "student int8 (torch)", "qat-pt2e", cfg.int8_max_rel
        parity.append(_compare(torch_fp32["student"], reference, ("student fp32 (torch)", ref_name)))
        parity += state.records.get("qat", {}).get("parity", [])  # fake-quant -> int8, measured by the qat stage
    elif spec.is_text:  # transformers: dynamic int8 (integer MatMuls, activations quantized at run time)
        quantize.dynamic_onnx(stage_dir / "student.fp32.onnx", int8_path)
        method = "dynamic-ort"
        reference, ref_name, max_rel = torch_fp32["student"], "student fp32 (torch)", None
    else:
        import onnx

        calibration = ctx.data.x_train[:512].cpu().numpy()
        fp32_file = stage_dir / "student.fp32.onnx"
        if state.plan is not None and not state.plan.all_fp32:  # the precision plan's int8 blocks only
            nodes = state.plan.nodes(onnx.load(str(fp32_file)))
            quantize.ptq_onnx(fp32_file, int8_path, calibration, nodes_to_quantize=nodes)
            method = "ptq-ort-static"
        else:  # no plan, or an all-fp32 one: every layer (the int8 file stays available for its size)
            (quantize.nncf_ptq_onnx if cfg.ptq == "nncf" else quantize.ptq_onnx)(fp32_file, int8_path, calibration)
            method = "ptq-nncf" if cfg.ptq == "nncf" else "ptq-ort-static"
        io.write_bytes(int8_path, fuse_friendly_qdq(onnx.load(str(int8_path))).SerializeToString())
        reference, ref_name, max_rel = torch_fp32["student"], "student fp32 (torch)", None
    rung = _compare(reference, onnx_logits(int8_path), (ref_name, "student int8 (onnx)"))
    _check(rung, rel(int8_path), None, cfg.int8_min_agreement, "int8", max_rel)
    parity.append(rung)
    kernels = sorted(set(ortr.optimized_op_types(int8_path)) & ortr.INTEGER_KERNELS)
    if not kernels:
        raise RefusedError(f"export {rel(int8_path)}: ONNX Runtime runs no integer kernel for it (its optimized "
                           "graph is all float), so it would be int8 in name only; export with torch 2.13")
    plan = {"precision_plan": state.plan.summary()} if state.plan is not None else {}
    add("student", "onnx-int8", int8_path, precision="int8", quantization=method, parity_max_abs=rung["max_abs"],
        integer_kernels=kernels, **plan)
    # An all-fp32 precision plan: int8 does not pay on this target, so its mobile file is built from fp32.
    int8_target = target.precision in ("int8", "w8a8") and not (state.plan is not None and state.plan.all_fp32)

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
        parity += _coreml_variants(ctx, fp32["student"], quantized, torch_fp32["student"], stage_dir, add)

    _check_deployable(ctx, artifacts)
    state.records["export"] = {"name": "export", "artifacts": artifacts, "parity": parity, "usage": _usage(spec)}
    return state


def _coreml_variants(ctx, fp32_module, quantized, reference: np.ndarray, stage_dir, add) -> list[dict]:
    """student.fp16.mlpackage and an int8 one: W8A8 from the QAT graph (int8 activations on the Neural
    Engine), else int8 weights with fp16 compute ("w8"). The variant the target's precision asks for is
    marked `for_target`. On macOS each is run on the held-out set and joins the parity ladder."""
    from edgedistill.runtimes import coreml as coreml_rt

    cfg, target, spec = ctx.recipe.stages.export, ctx.target, ctx.data.spec
    settings = target.coreml or CoreMLSettings()
    wants_int8 = target.precision in ("int8", "w8a8")
    rungs = []
    for variant in cfg.coreml_variants:
        precision = "fp16" if variant == "fp16" else "w8a8" if quantized is not None else "w8"
        path = stage_dir / f"student.{precision}.mlpackage"
        coreml.to_coreml(
            quantized if precision == "w8a8" else fp32_module, spec, path,
            deployment_target=settings.minimum_deployment_target, compute_units=settings.compute_units,
            precision=precision, version=__version__,
            description=f"{ctx.recipe.name}: {spec.task} student distilled for {target.name}",
        )
        info = coreml.inspect(path)
        if info["labels"] != list(spec.labels):
            raise RefusedError(f"export {path.name}: the package's class labels do not match the data's")
        extra = {"parity_note": coreml_rt.UNAVAILABLE}
        if coreml_rt.available():
            probs = coreml_rt.probabilities(path, ctx.data.x_test.cpu().numpy(), spec, info["input"]["name"])
            rung = _compare(_softmax(reference), probs, ("student fp32 (torch)", f"student {precision} (coreml)"))
            _check(rung, path.name, None, cfg.int8_min_agreement, "int8")
            rungs.append(rung)
            extra = {"parity_max_abs": rung["max_abs"]}
        add("student", "coreml", path, precision=precision, coreml=info,
            for_target=(variant == "int8") == wants_int8, **extra)
    return rungs


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _check_deployable(ctx, artifacts: list[dict]) -> None:
    """Each student file's operators against the target's runtime (edgedistill.deployability)."""
    from edgedistill.deployability import check_file, summarize

    loads = {"coreml": ("coreml",)}.get(ctx.target.runtime, ("onnx-fp32", "onnx-int8", "ort"))
    for art in artifacts:
        if art["role"] == "student" and art["kind"] in loads:
            art["deployability"] = summarize(check_file(ctx.out / art["path"], ctx.target))
            if not art["deployability"]["ok"]:
                ctx.log(f"    {art['path']}: {ctx.target.name} cannot run "
                        f"{', '.join(art['deployability']['unsupported'])}")


def _usage(spec) -> dict:
    """Input/output names, shapes and preprocessing: the report's "use it in your app" section."""
    batch = "batch"
    usage = {
        "inputs": [{"name": INPUT_NAME, "shape": [batch, *spec.input_shape],
                    "dtype": "int64" if spec.is_text else "float32"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [batch, spec.num_classes], "dtype": "float32"}],
        "labels": list(spec.labels), "coreml_outputs": list(coreml.OUTPUTS),
    }
    if spec.is_text:
        return {**usage, "coreml_input": coreml.TEXT_INPUT_NAME, "pad_id": spec.pad_id,
                "sequence_length": spec.input_shape[0]}
    return {**usage, "mean": list(spec.mean), "std": list(spec.std), "coreml_input": coreml.INPUT_NAME}


def _hf_directory(ctx, module, reference, stage_dir, onnx_logits, add) -> list[dict]:
    """The student as an optimum-loadable directory (fp32 model.onnx and int8 model_quantized.onnx, config,
    tokenizer), both files checked against the torch student."""
    cfg, rungs = ctx.recipe.stages.export, []
    path = stage_dir / "student.hf-onnx"
    hf_onnx.export(module, ctx.recipe.teacher.path, path, cfg.opset)
    for name, precision in ((hf_onnx.FP32_FILE, "fp32"), (hf_onnx.INT8_FILE, "int8")):
        rung = _compare(reference, onnx_logits(path / name), ("student fp32 (torch)", f"student {precision} (hf-onnx)"))
        if precision == "fp32":
            _check(rung, f"{path.name}/{name}", cfg.fp32_max_abs, None, "fp32")
        else:
            _check(rung, f"{path.name}/{name}", None, cfg.int8_min_agreement, "int8")
        rungs.append(rung)
    add("student", "hf-onnx", path, precision="fp32+int8", files={"fp32": hf_onnx.FP32_FILE, "int8": hf_onnx.INT8_FILE},
        loader="optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained(path)")
    return rungs


def restore(ctx, state, stage_dir):
    return state
