"""student: build the smaller model of the same task (widths/depth from the recipe; a Hugging Face student
starts from the teacher's layers), or a copy of the teacher (`student.from_teacher`) to prune and quantize
the teacher itself. `student.checkpoint` starts it from weights trained earlier."""

from __future__ import annotations

import copy

from edgedistill.models import ModelHandle
from edgedistill.stages.common import evaluate, load_weights, new_handle, save_weights


def _build(ctx, state) -> ModelHandle:
    cfg = ctx.recipe.student
    if cfg.from_teacher:
        t = state.teacher
        return ModelHandle(module=copy.deepcopy(t.module), spec=t.spec, arch=t.arch, channels=list(t.channels))
    handle = new_handle(ctx, cfg, teacher=state.teacher)
    return load_weights(handle, cfg.checkpoint, "student.checkpoint") if cfg.checkpoint else handle


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.student
    handle = _build(ctx, state)
    save_weights(handle, stage_dir)
    record = {"name": "student", "arch": cfg.arch, "channels": cfg.channels, **evaluate(handle, ctx, state)}
    record["params_vs_teacher"] = record["params"] / state.records["teacher"]["params"]
    if handle.arch == "hf":
        from edgedistill.models import hf

        record["transformer"] = hf.shape(handle.module)
    state.student = handle
    state.records["student"] = record
    return state


def restore(ctx, state, stage_dir):
    state.student = load_weights(_build(ctx, state), stage_dir / "model.pt", "student")
    return state
