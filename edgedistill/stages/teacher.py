"""teacher: load the user's trained teacher (a state_dict, weights only, or a Hugging Face directory) or
train one with its task's supervised loss (a Hugging Face encoder without a head for the data's classes is
fine-tuned)."""

from __future__ import annotations

from edgedistill.stages.base import STAGES, Stage
from edgedistill.tasks.fitting import train


@STAGES.register("teacher")
class Teacher(Stage):
    name, position = "teacher", 10

    def run(self, ctx, state, stage_dir):
        cfg, family = ctx.recipe.teacher, ctx.family(ctx.recipe.teacher)
        handle = family.new(cfg, ctx.data.spec, ctx.device)
        record: dict = {"name": "teacher", "arch": cfg.arch, "channels": cfg.channels}
        if cfg.checkpoint is not None:
            family.load_checkpoint(handle, cfg.checkpoint, "teacher.checkpoint")
        if family.needs_training(cfg, ctx.data.spec):
            record["source"] = family.trained_from(cfg)
            record["history"] = train(ctx, state, "teacher", handle.module, ctx.task.supervised(), stage_dir)
        else:
            record["source"] = family.given_as(cfg)
        family.save(handle, stage_dir)
        record.update(ctx.task.evaluate(handle, ctx))
        record.update(family.describe(handle.module))
        state.teacher = handle
        state.records["teacher"] = record

    def restore(self, ctx, state, stage_dir):
        state.teacher = ctx.family(ctx.recipe.teacher).load(stage_dir, ctx.data.spec, ctx.device)
        state.teacher.module.eval()
