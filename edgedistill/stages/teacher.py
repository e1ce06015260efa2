"""teacher: load the user's trained teacher (state_dict, weights only) or train one with cross-entropy."""

from __future__ import annotations

from edgedistill.distill import SupervisedTask
from edgedistill.stages.common import evaluate, load_weights, new_handle, save_weights
from edgedistill.training import fit


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.teacher
    handle = new_handle(ctx, cfg.arch, cfg.channels)
    record: dict = {"name": "teacher", "arch": cfg.arch, "channels": list(cfg.channels)}
    if cfg.checkpoint is not None:
        load_weights(handle, cfg.checkpoint, "teacher.checkpoint")
        record["source"] = str(cfg.checkpoint)
    else:
        stage = ctx.recipe.stages.teacher
        record["source"] = "trained"
        record["history"] = fit(
            handle.module, SupervisedTask(), ctx.data, stage, stage="teacher",
            checkpoint=stage_dir / "checkpoint.pt", batch_size=ctx.recipe.data.batch_size, seed=ctx.recipe.seed,
            on_epoch=lambda r: ctx.event("epoch", stage="teacher", **r),
        )
    save_weights(handle, stage_dir)
    record.update(evaluate(handle, ctx))
    state.teacher = handle
    state.records["teacher"] = record
    return state


def restore(ctx, state, stage_dir):
    cfg = ctx.recipe.teacher
    state.teacher = load_weights(new_handle(ctx, cfg.arch, cfg.channels), stage_dir / "model.pt", "teacher")
    state.teacher.module.eval()
    return state
