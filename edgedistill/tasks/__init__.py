"""Tasks: what the data means and how models of it are judged. A task loads its data, evaluates a model (its
headline metric and the rest), supplies the supervised and distillation losses, distils a student, and says
which stages apply to it. The stages call the task; they never test a task's name. Adding a task is one
module with `@TASKS.register("name")` plus its line in the registry's built-ins."""

from __future__ import annotations

from pathlib import Path

from edgedistill.registry import Registry

TASKS: Registry["Task"] = Registry(
    "task", builtins=("edgedistill.tasks.classification", "edgedistill.tasks.causal_lm"))


class Task:
    name = ""
    datasets: tuple[str, ...] = ()  # the recipe's data.dataset values that hold this task's data

    def load(self, cfg, seed: int, teacher_path: Path | None, preprocess=None):
        """The DataBundle: train and held-out splits and the ModelSpec. `preprocess`: how the teacher's family
        wants its images (edgedistill.data.preprocess.Preprocess), or None; tasks without images ignore it."""
        raise NotImplementedError

    def evaluate(self, handle, ctx, state=None) -> dict:
        """The report's stage-table columns of a model (accuracy first); with the pipeline state, also how
        close it is to the teacher."""
        raise NotImplementedError

    def supervised(self):
        """The loss a teacher trains with."""
        raise NotImplementedError

    def distill(self, ctx, state, stage_dir: Path) -> dict:
        """Train state.student from state.teacher; returns the distill record's fields beyond evaluate's."""
        raise NotImplementedError

    def skips(self, stage: str) -> str | None:
        """Why `stage` does not apply to this task, or None."""
        return None

    def preflight_skip(self) -> str | None:
        """Why the untrained student's operators are not checked before training, or None."""
        return None


def for_dataset(dataset: str) -> Task:
    for task in TASKS:
        if dataset in task.datasets:
            return task
    raise ValueError(f"data.dataset '{dataset}': no task reads it")
