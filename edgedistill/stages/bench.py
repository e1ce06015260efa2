"""bench: held-out accuracy, batch-1 latency and size of every exported artifact.

Latency is measured with ONNX Runtime on this machine, threads from the target. It is labelled
"measured" when this machine can stand in for the target (same ISA and CPU features), and
"measured-host" otherwise: then it compares artifacts with each other, it is not the phone's latency.

With `on_device`, the .ort is also timed on the attached Android phone (adb + onnxruntime_perf_test, labelled
"on-device"); on macOS, Core ML packages are run too (accuracy, and latency per compute unit).

Each runnable artifact's record also holds its held-out confusion matrix ("confusion": rows are the true
class, columns the predicted one, counts), from the same predictions as its accuracy."""

from __future__ import annotations

import numpy as np

from edgedistill import int8_arithmetic, latency
from edgedistill.estimate import estimate
from edgedistill.runtimes import adb
from edgedistill.runtimes import coreml as coreml_rt
from edgedistill.runtimes import onnxruntime as ortr

USES_TARGET = True
MAIN_ONLY = True  # under torchrun, rank 0 alone
RUNNABLE_KINDS = ("onnx-fp32", "onnx-int8", "ort", "hf-onnx")


def _model_file(ctx, art: dict):
    """The file ONNX Runtime loads: the artifact itself, or a Hugging Face directory's fp32 model.onnx."""
    path = ctx.out / art["path"]
    return path / art["files"]["fp32"] if art["kind"] == "hf-onnx" else path


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[list[int]]:
    """counts[true][predicted] as plain ints (JSON)."""
    counts = np.bincount(y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64),
                         minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).tolist()


def _source_onnx(art: dict, state) -> str | None:
    """The ONNX file an .ort or .mlpackage artifact was converted from (same precision)."""
    int8 = art.get("precision") in ("int8", "w8a8")
    kind = "onnx-int8" if int8 else "onnx-fp32"
    return next((a["path"] for a in state.records["export"]["artifacts"]
                 if a["role"] == art["role"] and a["kind"] == kind), None)


def _precision(art: dict, target) -> str:
    if art.get("precision") in ("int8", "w8a8"):
        return "int8"
    return "fp16" if art["kind"] == "coreml" or target.runtime == "coreml" else "fp32"


def validate(recipe, target) -> None:
    """Checked before any stage runs."""
    if recipe.stages.bench.on_device and target.runtime != "ort-mobile":
        from edgedistill.errors import UserError

        raise UserError(f"stages.bench.on_device: times the .ort on an attached Android phone, but {target.name} "
                        f"runs {target.runtime}; use an Android target (pixel-8, galaxy-s23) or turn it off")


def _coreml_on_mac(ctx, cfg, art: dict, x_test, y_test, kind: str) -> dict:
    """On macOS: held-out accuracy through Core ML predict, and latency per compute unit (the Mac's, so
    labelled like any host measurement)."""
    path, spec = ctx.out / art["path"], ctx.data.spec
    name = art["coreml"]["input"]["name"]
    pred = coreml_rt.probabilities(path, x_test, spec, name).argmax(-1)
    feed = coreml_rt.features(x_test[:1], spec, name)[0]
    per_unit = {cu: coreml_rt.latency_ms(path, feed, cu, cfg.warmup, cfg.repeats) for cu in coreml_rt.COMPUTE_UNITS}
    return {"accuracy": float((pred == y_test).mean()),
            "confusion": confusion_matrix(y_test, pred, spec.num_classes),
            "latency_ms": {**per_unit["ALL"], "kind": kind, "threads": None, "batch": 1},
            "latency_by_compute_unit": {cu: lat["p50"] for cu, lat in per_unit.items()}}


def _target_logits(ctx, state, art: dict, sess, x_test, threads: int, entry: dict) -> np.ndarray:
    """Held-out logits as the target computes them. An int8 file whose target adds up int8 products unlike this
    CPU (edgedistill.int8_arithmetic) runs by reference execution; an .ort (fused kernels only) through the
    .onnx it was converted from. The entry records which ("arithmetic", "accuracy_of")."""
    pad_id = ctx.data.spec.pad_id or 0
    if art.get("precision") != "int8" or int8_arithmetic.host_matches(ctx.target):
        if art.get("precision") == "int8":
            entry["arithmetic"] = "host-kernels"
        return ortr.logits(sess, x_test, pad_id=pad_id)
    source = art["path"] if art["kind"] != "ort" else _source_onnx(art, state)
    entry["arithmetic"] = "reference"
    if source != art["path"]:
        entry["accuracy_of"] = source
    return ortr.logits(ortr.session(ctx.out / source, threads, reference=True), x_test, pad_id=pad_id)


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.bench
    threads = ortr.host_threads(cfg.threads or ctx.target.threads)
    kind = latency.label(ctx.target)
    record = {"name": "bench", "threads": threads, "latency_kind": kind,
              "host_stands_in_for_target": ctx.target.runs_on_host()}
    if ctx.data.spec.is_lm:
        from edgedistill.stages import lm

        state.records["bench"] = {**record, **lm.bench(ctx, state, threads, kind)}
        return state
    x_test = ctx.data.x_test.cpu().numpy()
    y_test = ctx.data.y_test.cpu().numpy()
    num_classes = int(ctx.data.spec.num_classes)
    pad_id = ctx.data.spec.pad_id or 0
    results = []
    for art in state.records.get("export", {}).get("artifacts", []):
        entry = {"path": art["path"], "accuracy": None, "latency_ms": None}
        if art["kind"] in RUNNABLE_KINDS:
            sess = ortr.session(_model_file(ctx, art), threads)
            logits = _target_logits(ctx, state, art, sess, x_test, threads, entry)
            pred = logits.argmax(-1)
            entry["accuracy"] = float((pred == y_test).mean())
            entry["confusion"] = confusion_matrix(y_test, pred, max(num_classes, logits.shape[-1]))
            lat = ortr.latency_ms(sess, x_test[:1], cfg.warmup, cfg.repeats, pad_id=pad_id)
            entry["latency_ms"] = {**lat, "kind": kind, "threads": threads, "batch": 1, "runtime": "onnxruntime-cpu"}
            ctx.log(f"    {art['role']:<7} {art['kind']:<9} acc {entry['accuracy']:.4f}  "
                    f"p50 {lat['p50']:.3f} ms ({kind}, {threads} thr)  {art['size_bytes']:,} B")
        elif art["kind"] == "coreml" and coreml_rt.available():
            entry.update(_coreml_on_mac(ctx, cfg, art, x_test, y_test, kind))
        else:
            entry["latency_note"] = coreml_rt.UNAVAILABLE
        if art["kind"] == "ort" and cfg.on_device:
            entry["on_device_ms"] = adb.measure(ctx.out / art["path"], None, ctx.target.threads, cfg.repeats)
            ctx.log(f"    {art['role']:<7} ort on {entry['on_device_ms']['device']}: "
                    f"p50 {entry['on_device_ms']['p50']:.3f} ms (on-device)")
        if not ctx.target.runs_on_host() and (art["kind"] != "coreml" or ctx.target.runtime == "coreml"):
            # The target itself is out of reach: estimate it from its datasheet peaks (Core ML and .ort from
            # the ONNX graph they were converted from).
            source = (art["path"] if art["kind"].startswith("onnx") else
                      str(_model_file(ctx, art).relative_to(ctx.out)) if art["kind"] == "hf-onnx" else
                      _source_onnx(art, state))
            if source is not None:
                entry["estimate"] = estimate(ctx.out / source, ctx.target,
                                             precision=_precision(art, ctx.target))
        results.append(entry)
    state.records["bench"] = {**record, "artifacts": results}
    return state


def restore(ctx, state, stage_dir):
    return state
