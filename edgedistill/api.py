"""The pipeline from Python: `edgedistill.compress(...)` runs what `edgedistill compress` runs and returns
report.json's content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn


def _data_overrides(data: Any) -> list[str]:
    """A data argument as recipe overrides: a folder of class folders, an .npz file, or a data section."""
    if data is None:
        return []
    if isinstance(data, dict):
        return [f"data={json.dumps(data)}"]
    path = Path(data)
    if path.suffix.lower() == ".npz":
        return ["data.dataset=npz", f"data.path={json.dumps(str(path.resolve()))}"]
    return ["data.dataset=folder", f"data.path={json.dumps(str(path.resolve()))}"]


def _model_overrides(role: str, model: Any) -> list[str]:
    """A torch module becomes `arch: module:<name>` (edgedistill.families.module); a string is an arch name."""
    if model is None:
        return []
    if isinstance(model, nn.Module):
        from edgedistill.families.module import register

        return [f"{role}.arch={register(role, model)}", f"{role}.channels=null"]
    from edgedistill.families import family_of

    sized = family_of(str(model)).name == "zoo"  # only the zoo's cnn/mlp take the recipe's channels
    return [f"{role}.arch={json.dumps(str(model))}", *([] if sized else [f"{role}.channels=null"])]


def compress(teacher: nn.Module | str | None = None, student: nn.Module | str | None = None, data: Any = None, *,
             target: str | Path = "pixel-8", out: str | Path = "runs/compress", recipe: str | Path | None = None,
             overrides: dict[str, Any] | None = None, force: bool = False, quiet: bool = True) -> dict:
    """Distill, prune, quantize, export and bench as the recipe says, with your own teacher and student.

    teacher, student: torch modules (the teacher trained, used as it is; both take the data's normalized
    inputs and return logits), or arch names; None keeps the recipe's. data: a folder of class folders, a
    .csv/.jsonl list of path,label, an .npz, or a recipe data section (dict). recipe: None takes `photos` for a
    folder or list, else `digits`. overrides: {"stages.distill.epochs": 3, ...}, as `--set`.
    A second call with the same arguments resumes (finished stages are skipped). Returns report.json's content
    (artifact paths relative to `out`); raises edgedistill.errors.UserError on bad input and RefusedError
    when a stage refuses its result."""
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    if recipe is None:  # photos get the photos recipe's training settings; arrays the default's
        recipe = "photos" if data is not None and not isinstance(data, dict) and \
            Path(data).suffix.lower() != ".npz" else "digits"
    sets = [*_model_overrides("teacher", teacher), *_model_overrides("student", student), *_data_overrides(data)]
    sets += [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    resolved = load_recipe(recipe, sets)
    pipeline.run(resolved, load_target(target), Path(out), force=force, quiet=quiet)
    return json.loads((Path(out) / "report.json").read_text())
