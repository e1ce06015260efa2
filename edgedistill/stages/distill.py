"""distill: train the student on the teacher's soft targets plus the labels (logit KD, and feature or
attention terms when the recipe lists them). With `generations` > 1, born-again distillation: each new
generation is a freshly initialised student taught by the previous one; the last generation goes on.
With `data_free`, the student learns on generated images instead (edgedistill.distill.datafree), and the
teacher-labelled transfer set it leaves becomes the training split of every later stage."""

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


def _data_free(ctx, state, cfg, stage_dir) -> dict:
    """Train student and generator, then keep a transfer set of generated images for the later stages."""
    from edgedistill import distributed, io
    from edgedistill.distill import datafree
    from edgedistill.errors import UserError

    if distributed.world_size() > 1:
        raise UserError("stages.distill.data_free: runs in one process; start it without torchrun")
    df, teacher = cfg.data_free, state.teacher.module
    generator = datafree.Generator(df.z_dim, ctx.data.spec.input_shape, df.width).to(ctx.device)
    history = datafree.train(
        teacher, state.student.module, generator, cfg, checkpoint=stage_dir / "checkpoint.pt", device=ctx.device,
        evaluate=lambda m: accuracy(predict(m, ctx.data.x_test), ctx.data.y_test), progress=ctx.progress,
        on_epoch=lambda r: ctx.event("epoch", stage="distill", **r), say=ctx.log)
    io.save_torch(stage_dir / "generator.pt", generator.state_dict())
    x, y = datafree.synthesize(generator, teacher, df.transfer_set, df.batch_size, ctx.recipe.seed, ctx.device)
    io.save_torch(stage_dir / "transfer_set.pt", {"x": x.cpu(), "y": y.cpu()})
    ctx.data = ctx.data.with_training(x, y)
    share = torch.bincount(y, minlength=ctx.data.spec.num_classes).float() / len(y)
    confidence = torch.softmax(predict(teacher, x), -1).amax(-1).mean()
    return {"history": history, "data_free": df.model_dump(),
            "transfer_set": {"images": len(y), "class_share": [round(float(v), 4) for v in share],
                             "teacher_confidence": float(confidence)}}


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.distill
    if ctx.data.spec.is_lm or cfg.data_free.enabled:  # one student, trained its own way
        if ctx.data.spec.is_lm:
            from edgedistill.stages import lm

            info = {"kd_weight": cfg.kd_weight, "ce_weight": cfg.ce_weight, **lm.distill(ctx, state, stage_dir)}
        else:
            info = _data_free(ctx, state, cfg, stage_dir)
        save_weights(state.student, stage_dir)
        state.records["distill"] = {"name": "distill", **evaluate(state.student, ctx, state),
                                    "temperature": cfg.temperature, **info}
        return state
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
    if ctx.recipe.stages.distill.data_free.enabled:
        from edgedistill import io

        kept = io.load_torch(stage_dir / "transfer_set.pt")
        ctx.data = ctx.data.with_training(kept["x"].to(ctx.device), kept["y"].to(ctx.device))
    return state
