"""student: build the smaller model of the same task (widths/depth from the recipe), freshly initialised,
or a copy of the teacher (`student.from_teacher`) to prune and quantize the teacher itself."""

from __future__ import annotations

from edgedistill.stages.common import evaluate, load_weights, new_handle, save_weights


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.student
    handle = new_handle(ctx, cfg)
    if cfg.from_teacher:
        handle.module.load_state_dict(state.teacher.module.state_dict())
    save_weights(handle, stage_dir)
    record = {"name": "student", "arch": cfg.arch, "channels": cfg.channels, **evaluate(handle, ctx, state)}
    record["params_vs_teacher"] = record["params"] / state.records["teacher"]["params"]
    state.student = handle
    state.records["student"] = record
    return state


def restore(ctx, state, stage_dir):
    cfg = ctx.recipe.student
    state.student = load_weights(new_handle(ctx, cfg), stage_dir / "model.pt", "student")
    return state
