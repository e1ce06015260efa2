"""distill: train the student on the teacher's soft targets plus the labels (logit KD)."""

from __future__ import annotations

from edgedistill.distill import DistillationTask
from edgedistill.stages.common import agreement, evaluate, load_weights, save_weights
from edgedistill.training import fit


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.distill
    task = DistillationTask.from_stage(state.teacher.module, cfg)
    history = fit(
        state.student.module, task, ctx.data, cfg, stage="distill", checkpoint=stage_dir / "checkpoint.pt",
        batch_size=ctx.recipe.data.batch_size, seed=ctx.recipe.seed,
        on_epoch=lambda r: ctx.event("epoch", stage="distill", **r),
    )
    save_weights(state.student, stage_dir)
    state.records["distill"] = {
        "name": "distill", **evaluate(state.student, ctx), "history": history,
        "agreement_with_teacher": agreement(state.student, state.teacher, ctx),
        "temperature": cfg.temperature, "kd_weight": cfg.kd_weight, "ce_weight": cfg.ce_weight,
    }
    return state


def restore(ctx, state, stage_dir):
    load_weights(state.student, stage_dir / "model.pt", "distill")
    return state
