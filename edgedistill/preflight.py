"""Before any training: export the student as configured (untrained) to ONNX and check its operators against
the target (edgedistill.deployability), so a model the target cannot run shows up in seconds, not after hours
of training. The verdict goes to preflight.json and the report; a failing check warns, it does not stop the
run (the target may take another format than the one checked)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgedistill import io


def _key(ctx) -> str:
    """What the verdict depends on: the models, the data's shape, the opset and the target."""
    import hashlib
    import json

    r = ctx.recipe
    parts = [r.teacher.model_dump(mode="json"), r.student.model_dump(mode="json"), list(ctx.data.spec.input_shape),
             ctx.data.spec.num_classes, r.stages.export.opset, ctx.target.model_dump(mode="json")]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run(ctx) -> dict:
    """The check's record, written to OUT/preflight.json (a skipped check with its reason: the report says so)."""
    import json

    done = ctx.out / "preflight.json"
    if done.exists():  # a resumed run: the same models and target were checked already
        previous = json.loads(done.read_text())
        if previous.get("key") == _key(ctx):
            return previous
    record = {**_check(ctx), "key": _key(ctx)}
    io.write_json(done, record)
    if not record.get("ok", True):
        ctx.log(f"preflight: {ctx.target.name} cannot run {', '.join(record['unsupported'])} in the student; "
                "the export for it will fail its check")
    elif record.get("off_accelerator"):
        ctx.log(f"preflight: on {ctx.target.name}, {', '.join(record['off_accelerator'])} would run off "
                f"the {record['accelerator']}")
    return record


def _check(ctx) -> dict:
    try:
        from edgedistill.deployability import check_file, rules, summarize
        from edgedistill.exporters.onnx import export_onnx
    except ImportError as e:  # a training-only image without the export stack
        return {"checked": None, "skipped": f"needs the export stack ({e.name} is not installed)"}
    recipe = ctx.recipe
    if skipped := ctx.task.preflight_skip():
        return {"checked": None, "skipped": skipped}
    formats = rules()[ctx.target.runtime]  # the file formats the runtime's operator rules are written for
    if "onnx" not in formats:  # an ONNX graph says nothing of what its own lowering runs where (.pte, .tflite)
        return {"checked": None, "skipped": f"{ctx.target.name} loads .{', .'.join(formats)} files, "
                                            "checked when the export writes them"}
    family, spec = ctx.family(recipe.student), ctx.data.spec
    # a student built from its teacher (Hugging Face layers, from_teacher) needs the teacher first
    teacher = ctx.family(recipe.teacher).new(recipe.teacher, spec, ctx.device) if (
        family.student_needs_teacher or recipe.student.from_teacher) else None
    student = teacher if recipe.student.from_teacher else family.new(recipe.student, spec, ctx.device, teacher=teacher)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "student.onnx"
        export_onnx(student.module.cpu().eval(), student.spec, path, recipe.stages.export.opset)
        return {"checked": "fp32 ONNX of the untrained student", **summarize(check_file(path, ctx.target))}
