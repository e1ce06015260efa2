"""Stages written as modules of functions (`run`, `restore`, `validate`, USES_TARGET, MAIN_ONLY), as Stages."""

from __future__ import annotations

import importlib

from edgedistill.stages.base import STAGES, Stage


class ModuleStage(Stage):
    def __init__(self, name: str, position: int):
        self.name, self.position = name, position
        self.module = importlib.import_module(f"edgedistill.stages.{name}")
        self.uses_target = getattr(self.module, "USES_TARGET", False)
        self.main_only = getattr(self.module, "MAIN_ONLY", False)

    def validate(self, recipe, target) -> None:
        if hasattr(self.module, "validate"):
            self.module.validate(recipe, target)

    def run(self, ctx, state, stage_dir):
        self.module.run(ctx, state, stage_dir)

    def restore(self, ctx, state, stage_dir):
        self.module.restore(ctx, state, stage_dir)


STAGES.register("export")(ModuleStage("export", 70))
STAGES.register("bench")(ModuleStage("bench", 80))
