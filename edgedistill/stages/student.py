"""student: build the smaller model of the same task (widths/depth from the recipe; a Hugging Face student
starts from the teacher's layers), or a copy of the teacher (`student.from_teacher`) to prune and quantize
the teacher itself. `student.checkpoint` starts it from weights trained earlier."""

from __future__ import annotations

import copy

from edgedistill.models import ModelHandle
from edgedistill.stages.base import STAGES, Stage


@STAGES.register("student")
class Student(Stage):
    name, position = "student", 20

    def _build(self, ctx, state) -> ModelHandle:
        cfg = ctx.recipe.student
        if cfg.from_teacher:
            t = state.teacher
            return ModelHandle(module=copy.deepcopy(t.module), spec=t.spec, arch=t.arch, channels=list(t.channels))
        family = ctx.family(cfg)
        handle = family.new(cfg, ctx.data.spec, ctx.device, teacher=state.teacher)
        return family.load_checkpoint(handle, cfg.checkpoint, "student.checkpoint") if cfg.checkpoint else handle

    def run(self, ctx, state, stage_dir):
        cfg = ctx.recipe.student
        handle = self._build(ctx, state)
        family = ctx.family(cfg)
        family.save(handle, stage_dir)
        record = {"name": "student", "arch": cfg.arch, "channels": cfg.channels,
                  **ctx.task.evaluate(handle, ctx, state)}
        record["params_vs_teacher"] = record["params"] / state.records["teacher"]["params"]
        record.update(family.describe(handle.module))
        state.student = handle
        state.records["student"] = record

    def restore(self, ctx, state, stage_dir):
        state.student = ctx.family(ctx.recipe.student).load(stage_dir, ctx.data.spec, ctx.device)
