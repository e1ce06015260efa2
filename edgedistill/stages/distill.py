"""distill: train the student on the teacher's soft targets plus the labels (logit KD)."""

from __future__ import annotations

from edgedistill.stages.common import agreement, evaluate, load_weights, make_task, save_weights, train


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.distill
    task = make_task(ctx, state, cfg, state.student.module)
    history = train(ctx, "distill", state.student.module, task, stage_dir)
    task.close()
    save_weights(state.student, stage_dir)
    state.records["distill"] = {
        "name": "distill", **evaluate(state.student, ctx), "history": history,
        "agreement_with_teacher": agreement(state.student, state.teacher, ctx),
        "temperature": cfg.temperature, "kd_weight": cfg.kd_weight, "ce_weight": cfg.ce_weight,
        "features": [f.model_dump() for f in cfg.features], "teacher_logits_cached": task.cached_logits is not None,
    }
    return state


def restore(ctx, state, stage_dir):
    load_weights(state.student, stage_dir / "model.pt", "distill")
    return state
