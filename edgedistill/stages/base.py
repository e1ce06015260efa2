"""The stage contract. A stage is a registered `Stage` subclass: `run` does its work under its own directory
and puts its record in state.records[name] (and a typed output in state.outputs[name] when later stages
need more than the student); `restore` rebuilds that output from the files of a finished run. The recipe
section `stages.<name>` is its config. The pipeline runs stages by `position`."""

from __future__ import annotations

from pathlib import Path

from edgedistill.registry import Registry

STAGES: Registry["Stage"] = Registry("stage", builtins=tuple(
    f"edgedistill.stages.{name}"
    for name in ("teacher", "student", "distill", "prune", "precision", "qat", "export", "bench", "report")))


class Stage:
    name = ""
    position = 0  # the order the pipeline runs stages in
    uses_target = False  # its result depends on the target profile (part of its fingerprint)
    main_only = False  # under torchrun, rank 0 alone (files only it writes; the others wait at the end)

    def config(self, recipe):
        return getattr(recipe.stages, self.name)

    def not_applicable(self, ctx) -> str | None:
        """Why the stage does not apply to this run (logged, the stage skipped), or None."""
        return ctx.task.skips(self.name)

    def validate(self, recipe, target) -> None:
        """Recipe x target conflicts, raised as UserError before any stage runs."""

    def run(self, ctx, state, stage_dir: Path) -> None:
        raise NotImplementedError

    def restore(self, ctx, state, stage_dir: Path) -> None:
        """Rebuild what `run` left in `state` from `stage_dir` (its record is restored already)."""


def ordered() -> list[Stage]:
    return sorted(STAGES, key=lambda s: s.position)
