"""teacher: load the user's trained teacher (state_dict, weights only) or train one with cross-entropy."""

from __future__ import annotations

from edgedistill.distill import SupervisedTask
from edgedistill.stages.common import evaluate, load_weights, new_handle, save_weights, train


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.teacher
    handle = new_handle(ctx, cfg)
    record: dict = {"name": "teacher", "arch": cfg.arch, "channels": cfg.channels}
    if cfg.checkpoint is not None:
        load_weights(handle, cfg.checkpoint, "teacher.checkpoint")
        record["source"] = str(cfg.checkpoint)
    else:
        record["source"] = "trained"
        record["history"] = train(ctx, "teacher", handle.module, SupervisedTask(), stage_dir)
    save_weights(handle, stage_dir)
    record.update(evaluate(handle, ctx))
    state.teacher = handle
    state.records["teacher"] = record
    return state


def restore(ctx, state, stage_dir):
    cfg = ctx.recipe.teacher
    state.teacher = load_weights(new_handle(ctx, cfg), stage_dir / "model.pt", "teacher")
    state.teacher.module.eval()
    return state
