"""export: ONNX fp32 (teacher and student) and int8, .ort for Android, .mlpackage for iOS, and for Hugging
Face students an optimum-loadable ONNX directory. Every file is checked against the model it came from on the
held-out inputs; beyond tolerance the run stops (exit 3)."""

from __future__ import annotations

import copy
import shutil

import numpy as np

from edgedistill import __version__, int8_arithmetic, io, quantize
from edgedistill.errors import RefusedError
from edgedistill.exporters import coreml, hf_onnx, ort_mobile
from edgedistill.exporters.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, exporter_failure, fuse_friendly_qdq
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.targets import CoreMLSettings
from edgedistill.training import predict

USES_TARGET = True
MAIN_ONLY = True  # under torchrun, rank 0 alone
# The format each runtime loads: it must be written (its failure stops the run); other formats are extras.
RUNTIME_FORMAT = {"ort-mobile": "ort", "coreml": "coreml", "onnxruntime": "onnx"}


def _compare(reference: np.ndarray, other: np.ndarray, names: tuple[str, str]) -> dict:
    max_abs = float(np.abs(reference - other).max())
    return {"from": names[0], "to": names[1],
            "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean()),
            "max_abs": max_abs, "max_rel": max_abs / max(float(np.abs(reference).max()), 1e-12)}


def _failure(rung: dict, max_abs: float | None, min_agreement: float | None, field: str,
             max_rel: float | None = None) -> str | None:
    """What in `rung` breaks a tolerance, naming the recipe key (its --set path), or None."""
    key = f"stages.export.{field}"
    if max_abs is not None and rung["max_abs"] > max_abs:
        return f"differs from {rung['from']} by {rung['max_abs']:.3g} (> {key}_max_abs {max_abs})"
    if max_rel is not None and rung["max_rel"] > max_rel:
        return f"differs from {rung['from']} by {rung['max_rel']:.1%} of its largest logit (> {key}_max_rel {max_rel})"
    if min_agreement is not None and rung["top1_agreement"] < min_agreement:
        return (f"agrees with {rung['from']} on {rung['top1_agreement']:.1%} of held-out inputs "
                f"(< {key}_min_agreement {min_agreement})")
    return None


def _check(rung: dict, artifact, max_abs: float | None, min_agreement: float | None, field: str,
           max_rel: float | None = None, out=None, why: str = "") -> None:
    """Refuse `artifact` (a Path under `out`) when `rung` breaks a tolerance: it is renamed *.refused.* so that
    nothing loads it by its usual name, and the run stops (exit 3)."""
    failure = _failure(rung, max_abs, min_agreement, field, max_rel)
    if failure is not None:
        _refuse(artifact, out, lambda name: f"parity: {name} {failure}{why}")


def _refuse(artifact, out, message) -> None:
    """Rename `artifact` *.refused.* (nothing may load a refused file by its usual name) and stop the run with
    `message(its name)`, which is told where the file was kept."""
    refused = io.set_aside(artifact)
    show = (lambda p: str(p.relative_to(out))) if out is not None else (lambda p: p.name)  # noqa: E731
    raise RefusedError(f"{message(show(artifact))}; not trusted, kept as {show(refused)}")


def _remove(path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _on_cpu(module):
    """A CPU copy: the artifacts run on CPUs, and a GPU reference (TF32 convolutions) would differ from them."""
    return copy.deepcopy(module).cpu()


def run(ctx, state, stage_dir):
    cfg, target, spec = ctx.recipe.stages.export, ctx.target, ctx.data.spec
    for stale in stage_dir.glob("**/*.refused*"):  # an earlier attempt's refusals
        _remove(stale)
    if spec.is_lm:
        from edgedistill.stages import lm

        state.records["export"] = lm.export(ctx, state, stage_dir)
        return state
    x = ctx.data.x_test.cpu()
    x_np = x.numpy()
    rel = lambda p: str(p.relative_to(ctx.out))  # noqa: E731
    artifacts, parity = [], []

    computed: dict = {}

    def onnx_logits(path, reference=False):  # each file runs over the held-out set once per arithmetic
        if (path, reference) not in computed:
            sess = ortr.session(path, ortr.host_threads(2), reference=reference)
            computed[path, reference] = ortr.logits(sess, x_np, pad_id=spec.pad_id or 0)
        return computed[path, reference]

    def int8_rung(reference_logits, path, names, tolerances, artifact=None):
        """The int8 file against its reference, in the target's arithmetic (int8_rung)."""
        return _int8_rung(ctx, reference_logits, path, names, tolerances, onnx_logits, artifact or path)

    required = RUNTIME_FORMAT.get(target.runtime, "onnx")
    failed = []

    def attempt(fmt, make):
        """Build one format. The target's own runtime format must succeed; any other is an extra, whose failure
        is recorded (report.json "failed_formats", a note in the report) while the run goes on."""
        try:
            return make()
        except Exception as e:  # noqa: BLE001 (an extra never stops the run, whatever its converter raised)
            if fmt == required:
                raise
            reason = str(e) if isinstance(e, RefusedError) else exporter_failure(e)
            failed.append({"format": fmt, "required": required, "reason": reason})
            ctx.log(f"    warning: {fmt} export failed ({reason}); {target.name} ships {required}, so the run "
                    f"goes on without {fmt}")
            return []

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
        _check(rung, path, cfg.fp32_max_abs, None, "fp32", out=ctx.out)
        parity.append(rung)
        add(role, "onnx-fp32", path, precision="fp32", parity_max_abs=rung["max_abs"])
    parity.insert(0, _compare(torch_fp32["teacher"], torch_fp32["student"], ("teacher fp32 (torch)", "student fp32 (torch)")))
    if spec.is_text and "hf-onnx" in cfg.formats:  # optimum's layout; Hugging Face students only
        parity += attempt("hf-onnx", lambda: _hf_directory(ctx, fp32["student"], torch_fp32["student"], stage_dir,
                                                            onnx_logits, int8_rung, add))

    # int8: the QAT model's own graph, or when QAT is off ONNX Runtime PTQ: static for CNNs, dynamic for
    # transformers; weights in the range the target's kernels add up exactly (7-bit on x86 without VNNI)
    int8_path = stage_dir / "student.int8.onnx"
    weight_range = target.int8_weight_range
    if quantized is not None:
        export_onnx(quantized, spec, int8_path, cfg.opset, int8=True)
        reference = predict(quantized, x, set_mode=quantize.set_mode).numpy()
        ref_name, method, max_rel = "student int8 (torch)", "qat-pt2e", cfg.int8_max_rel
        parity.append(_compare(torch_fp32["student"], reference, ("student fp32 (torch)", ref_name)))
        parity += state.records.get("qat", {}).get("parity", [])  # fake-quant -> int8, measured by the qat stage
    elif spec.is_text:  # transformers: dynamic int8 (integer MatMuls, activations quantized at run time)
        quantize.dynamic_onnx(stage_dir / "student.fp32.onnx", int8_path, weight_range)
        method = "dynamic-ort"
        reference, ref_name, max_rel = torch_fp32["student"], "student fp32 (torch)", None
    else:
        import onnx

        calibration = ctx.data.x_train[:512].cpu().numpy()
        fp32_file = stage_dir / "student.fp32.onnx"
        if state.plan is not None and not state.plan.all_fp32:  # the precision plan's int8 blocks only
            nodes = state.plan.nodes(onnx.load(str(fp32_file)))
            quantize.ptq_onnx(fp32_file, int8_path, calibration, nodes_to_quantize=nodes, weight_range=weight_range)
            method = "ptq-ort-static"
        else:  # no plan, or an all-fp32 one: every layer (the int8 file stays available for its size)
            ptq = quantize.nncf_ptq_onnx if cfg.ptq == "nncf" else quantize.ptq_onnx
            ptq(fp32_file, int8_path, calibration, weight_range=weight_range)
            method = "ptq-nncf" if cfg.ptq == "nncf" else "ptq-ort-static"
        io.write_bytes(int8_path, fuse_friendly_qdq(onnx.load(str(int8_path))).SerializeToString())
        reference, ref_name, max_rel = torch_fp32["student"], "student fp32 (torch)", None
    rung = int8_rung(reference, int8_path, (ref_name, "student int8 (onnx)"), (cfg.int8_min_agreement, max_rel))
    parity.append(rung)
    kernels = sorted(set(ortr.optimized_op_types(int8_path)) & ortr.INTEGER_KERNELS)
    if not kernels:
        _refuse(int8_path, ctx.out, lambda name: f"export {name}: ONNX Runtime runs no integer kernel for it (its "
                "optimized graph is all float), so it would be int8 in name only; export with torch 2.13")
    plan = {"precision_plan": state.plan.summary()} if state.plan is not None else {}
    add("student", "onnx-int8", int8_path, precision="int8", quantization=method, parity_max_abs=rung["max_abs"],
        integer_kernels=kernels, weight_range=list(weight_range), int8_arithmetic=target.arithmetic,
        parity_arithmetic=rung["arithmetic"], **plan)
    # An all-fp32 precision plan: int8 does not pay on this target, so its mobile file is built from fp32.
    int8_target = target.precision in ("int8", "w8a8") and not (state.plan is not None and state.plan.all_fp32)

    def ort_file() -> list[dict]:
        source = int8_path if int8_target else stage_dir / "student.fp32.onnx"
        path, config = ort_mobile.to_ort(source, stage_dir / "ort", target.arch)
        # the conversion is checked on this CPU's kernels on both sides (an .ort holds fused kernels only)
        rung = _compare(onnx_logits(source), onnx_logits(path),
                        (f"student {'int8' if int8_target else 'fp32'} (onnx)", "student (ort)"))
        if int8_target:
            rung["arithmetic"] = "host-kernels"
            _check(rung, path, None, cfg.int8_min_agreement, "int8", cfg.int8_max_rel, ctx.out)
        else:
            _check(rung, path, cfg.fp32_max_abs, None, "fp32", out=ctx.out)
        add("student", "ort", path, precision="int8" if int8_target else "fp32", parity_max_abs=rung["max_abs"],
            required_operators=rel(config), target_platform=target.arch)
        return [rung]

    if "ort" in cfg.formats:
        parity += attempt("ort", ort_file)
    if "coreml" in cfg.formats:
        parity += attempt("coreml", lambda: _coreml_variants(ctx, fp32["student"], quantized, torch_fp32["student"],
                                                             stage_dir, add))

    _check_deployable(ctx, artifacts)
    state.records["export"] = {"name": "export", "artifacts": artifacts, "parity": parity, "usage": _usage(spec),
                               "failed_formats": failed}
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
            _refuse(path, ctx.out, lambda name: f"export {name}: the package's class labels do not match the data's")
        extra = {"parity_note": coreml_rt.UNAVAILABLE}
        if coreml_rt.available():
            probs = coreml_rt.probabilities(path, ctx.data.x_test.cpu().numpy(), spec, info["input"]["name"])
            rung = _compare(_softmax(reference), probs, ("student fp32 (torch)", f"student {precision} (coreml)"))
            _check(rung, path, None, cfg.int8_min_agreement, "int8", out=ctx.out)
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


def _hf_directory(ctx, module, reference, stage_dir, onnx_logits, int8_rung, add) -> list[dict]:
    """The student as an optimum-loadable directory (fp32 model.onnx and int8 model_quantized.onnx, config,
    tokenizer), both files checked against the torch student; a refusal renames the whole directory."""
    cfg = ctx.recipe.stages.export
    path = stage_dir / "student.hf-onnx"
    hf_onnx.export(module, ctx.recipe.teacher.path, path, cfg.opset, ctx.target.int8_weight_range)
    fp32 = _compare(reference, onnx_logits(path / hf_onnx.FP32_FILE), ("student fp32 (torch)", "student fp32 (hf-onnx)"))
    _check(fp32, path, cfg.fp32_max_abs, None, "fp32", out=ctx.out)
    int8 = int8_rung(reference, path / hf_onnx.INT8_FILE, ("student fp32 (torch)", "student int8 (hf-onnx)"),
                     (cfg.int8_min_agreement, None), artifact=path)
    rungs = [fp32, int8]
    add("student", "hf-onnx", path, precision="fp32+int8", files={"fp32": hf_onnx.FP32_FILE, "int8": hf_onnx.INT8_FILE},
        loader="optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained(path)")
    return rungs


def _int8_rung(ctx, reference: np.ndarray, path, names: tuple[str, str], tolerances: tuple, onnx_logits,
               artifact) -> dict:
    """Compare an int8 file with its reference, judged in the target's int8 arithmetic: with this CPU's fused
    kernels when they compute as the target's do, else with the file's reference semantics (Q/DQ as float
    ops), the host kernels' result kept beside it as information. Refuses (renaming `artifact`) when the
    judged result breaks `tolerances` (min_agreement, max_rel)."""
    min_agreement, max_rel = tolerances
    target = ctx.target
    if int8_arithmetic.host_matches(target):
        rung = {**_compare(reference, onnx_logits(path), names), "arithmetic": "host-kernels"}
        why = ""
        if int8_arithmetic.host_arithmetic() == int8_arithmetic.PAIR_SATURATING:
            findings = int8_arithmetic.saturation_findings(_load_onnx(path))
            if findings and _failure(rung, None, min_agreement, "int8", max_rel):
                why = (f"; {len(findings)} of its layers hold 8-bit weight pairs that this CPU's non-VNNI kernels "
                       "saturate (int8_arithmetic: 7-bit weights avoid it)")
        _check(rung, artifact, None, min_agreement, "int8", max_rel, ctx.out, why)
        return rung
    rung = {**_compare(reference, onnx_logits(path, reference=True), names), "arithmetic": "reference"}
    host = _compare(reference, onnx_logits(path), names)
    rung["host_kernels"] = {k: host[k] for k in ("top1_agreement", "max_abs", "max_rel")}
    rung["host_arithmetic"] = int8_arithmetic.host_arithmetic()
    _check(rung, artifact, None, min_agreement, "int8", max_rel, ctx.out,
           f" in {target.name}'s arithmetic (reference execution; this CPU's own kernels: "
           f"{host['top1_agreement']:.1%} agreement, {host['max_rel']:.1%} of the largest logit)")
    rel = artifact.relative_to(ctx.out)
    if host_failure := _failure(host, None, min_agreement, "int8", max_rel):
        ctx.log(f"    warning: {rel} run with this CPU's own int8 kernels "
                f"{host_failure}, because {int8_arithmetic.host_difference(target)}; "
                f"judged by reference execution instead ({rung['top1_agreement']:.1%} agreement, "
                f"{rung['max_rel']:.1%} of the largest logit)")
    return rung


def _load_onnx(path):
    import onnx

    return onnx.load(str(path))


def restore(ctx, state, stage_dir):
    return state
