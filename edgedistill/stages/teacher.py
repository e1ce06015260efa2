"""teacher: load the user's trained teacher (a state_dict, weights only, or a Hugging Face directory) or
train one with cross-entropy (a Hugging Face encoder without a head for the data's classes is fine-tuned)."""

from __future__ import annotations

from edgedistill.distill import SupervisedTask
from edgedistill.errors import UserError
from edgedistill.stages.common import evaluate, load_weights, new_handle, save_weights, train


def _needs_training(ctx, cfg) -> bool:
    if cfg.arch == "hf-lm":  # used as it is
        return False
    if cfg.arch != "hf":
        return cfg.checkpoint is None
    from edgedistill.models import hf

    classes, wanted = hf.head_classes(cfg.path), ctx.data.spec.num_classes
    fits = classes == wanted
    if cfg.finetune is False and not fits:
        has = f"a head for {classes} classes" if classes else "no classification head"
        raise UserError(f"teacher.finetune: false, but {cfg.path} has {has} and the data has {wanted} classes (it "
                        "would start from a random head); set teacher.finetune: true or give a classifier trained "
                        "on these labels")
    return cfg.finetune if cfg.finetune is not None else not fits


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.teacher
    handle = new_handle(ctx, cfg)
    record: dict = {"name": "teacher", "arch": cfg.arch, "channels": cfg.channels}
    if cfg.checkpoint is not None:
        load_weights(handle, cfg.checkpoint, "teacher.checkpoint")
    if _needs_training(ctx, cfg):
        record["source"] = "fine-tuned from " + str(cfg.path) if cfg.arch == "hf" else "trained"
        record["history"] = train(ctx, "teacher", handle.module, SupervisedTask(), stage_dir)
    else:
        record["source"] = str(cfg.checkpoint or cfg.path)
    save_weights(handle, stage_dir)
    record.update(evaluate(handle, ctx))
    if cfg.arch == "hf":
        from edgedistill.models import hf

        record["transformer"] = hf.shape(handle.module)
    state.teacher = handle
    state.records["teacher"] = record
    return state


def restore(ctx, state, stage_dir):
    cfg = ctx.recipe.teacher
    state.teacher = load_weights(new_handle(ctx, cfg), stage_dir / "model.pt", "teacher")
    state.teacher.module.eval()
    return state
