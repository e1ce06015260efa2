"""distill: train the student on the teacher's soft targets plus the labels (logit KD, and feature or
attention terms when the recipe lists them). With `generations` > 1, born-again distillation: each new
generation is a freshly initialised student taught by the previous one; the last generation goes on."""

from __future__ import annotations

import torch

from edgedistill.stages.common import (evaluate, load_weights, make_task, new_handle, save_weights,
                                       train)
from edgedistill.training import accuracy, predict


def _generation(ctx, state, cfg, stage_dir, g: int, student, teacher_module):
    """Train one generation (resumable on its own checkpoint) and return its history."""
    weights = stage_dir / f"generation{g}.pt"
    if weights.exists():  # finished before an interruption
        load_weights(student, weights, "distill")
        return None, {}
    task = make_task(ctx, state, "distill", cfg, student.module, teacher=teacher_module)
    history = train(ctx, "distill", student.module, task, stage_dir,
                    checkpoint_name=f"checkpoint{g}.pt" if cfg.generations > 1 else "checkpoint.pt")
    task.close()
    if cfg.generations > 1:
        from edgedistill import io

        io.save_torch(weights, student.module.state_dict())
    return history, {"teacher_logits_cached": task.cached_logits is not None, **task.cache_info}


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.distill
    generations, histories, info = [], [], {}
    teacher_module = state.teacher.module
    for g in range(cfg.generations):
        student = state.student if g == 0 else new_handle(ctx, ctx.recipe.student, teacher=state.teacher)
        history, gen_info = _generation(ctx, state, cfg, stage_dir, g, student, teacher_module)
        histories.append(history)
        info = info or gen_info
        generations.append(student)
        teacher_module = student.module.eval()
    state.student = generations[-1]
    save_weights(state.student, stage_dir)
    record = {
        "name": "distill", **evaluate(state.student, ctx, state), "history": histories[-1] or [],
        "temperature": cfg.temperature, "kd_weight": cfg.kd_weight, "ce_weight": cfg.ce_weight,
        "features": [f.model_dump() for f in cfg.features], "teacher_logits_cached": False, **info,
    }
    if cfg.generations > 1:
        record["generations"] = [{"generation": g + 1, **evaluate(s, ctx)} for g, s in enumerate(generations)]
        if cfg.ensemble_generations:
            probs = torch.stack([torch.softmax(predict(s.module, ctx.data.x_test), -1) for s in generations]).mean(0)
            record["ensemble_accuracy"] = accuracy(probs, ctx.data.y_test)
    state.records["distill"] = record
    return state


def restore(ctx, state, stage_dir):
    load_weights(state.student, stage_dir / "model.pt", "distill")
    return state
