"""Runs the stages in order over one run directory, skipping finished ones and resuming interrupted ones.

OUT/
  recipe.resolved.yaml     the recipe as validated, with every default filled in; written once recipe, target
                           and data are valid, it marks a run directory (the only kind --force empties)
  events.jsonl             one JSON object per event, for tools and CI
  NN-stage/                each stage's files; `done.json` is written last, atomically, and marks
                           the stage finished for the fingerprint it records; `refused.json` instead
                           when the stage refused its own result (exit 3)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgedistill import distributed, environment, io, rundir
from edgedistill.data import DataBundle
from edgedistill.errors import RefusedError, UserError
from edgedistill.families import ModelFamily, family_of
from edgedistill.models import ModelHandle
from edgedistill.recipe import Recipe
from edgedistill.targets import TargetProfile
from edgedistill.tasks import Task, for_dataset


REFUSED = "refused.json"


@dataclass(frozen=True)
class Context:
    """What every stage may read; stages write only under their own directory and into the State."""

    recipe: Recipe
    target: TargetProfile
    out: Path
    device: torch.device
    data: DataBundle
    task: Task
    quiet: bool = False
    cache: dict = field(default_factory=dict)  # results stages share within one run (teacher logits)
    progress: Any = None

    def family(self, cfg) -> ModelFamily:
        """The family of a recipe's teacher or student section."""
        return family_of(cfg.arch)

    def log(self, message: str) -> None:
        if not self.quiet and distributed.is_main():
            from rich.console import Console

            Console(stderr=True, highlight=False).print(message)

    def warn(self, message: str) -> None:
        """One line on stderr, shown even with --quiet: something the user should fix or know, not a failure."""
        if distributed.is_main():
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def event(self, kind: str, **fields: Any) -> None:
        if not distributed.is_main():
            return
        line = json.dumps({"time": round(time.time(), 3), "event": kind, **fields}, default=str)
        path = self.out / "events.jsonl"
        with io.naming_full_disk(path), open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@dataclass
class State:
    """What flows from stage to stage: the two models, each stage's record, and the typed outputs of the
    stages that hand on more than the student (stage name -> output)."""

    teacher: ModelHandle | None = None
    student: ModelHandle | None = None
    records: dict[str, dict] = field(default_factory=dict)  # stage name -> its result.json
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def plan(self):
        """edgedistill.precision.Plan: the blocks that run int8 (None: all of them)."""
        return self.outputs.get("precision")

    @property
    def all_fp32(self) -> bool:
        """The precision plan found no int8 block worth its overhead on the target."""
        return self.plan is not None and self.plan.all_fp32

    @property
    def quantized(self) -> torch.nn.Module | None:
        """The int8 (PT2E-converted) student from QAT, reference for its export."""
        return self.outputs.get("qat")


def _stages():
    from edgedistill.stages.base import ordered

    return ordered()


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())  # torchrun: set to LOCAL_RANK


def _fingerprint(previous: str, recipe: Recipe, target: TargetProfile, name: str, uses_target: bool) -> str:
    import hashlib

    from edgedistill.version import __version__

    parts = [previous or __version__, recipe.stage_fingerprint(name)]  # a new release redoes the stages
    if uses_target:
        parts.append(target.model_dump_json())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _deterministic(compiled: bool) -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True). That also sets inductor's flag, importing
    torch._inductor.config (a second of every run); only torch.compile uses inductor, so otherwise set the
    switch alone."""
    if compiled or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def run(recipe: Recipe, target: TargetProfile, out: Path, *, force: bool = False, quiet: bool = False) -> State:
    # Absolute once, here: a stage may chdir (onnxruntime's quantizer runs in a temporary directory), and every
    # path the run records is written relative to `out`.
    out = Path(out).resolve()
    with io.RunLock(out) if distributed.is_main() else contextlib.nullcontext():
        if distributed.is_main():
            if force:
                rundir.check_force(out)
            rundir.sweep(out)
        ctx = _context(recipe, target, out, quiet)  # recipe, target and data valid, nothing written yet
        if force and distributed.is_main():
            rundir.clear(out)
        _write_inputs(ctx)
        with distributed.failures_shared():  # rank 0 has locked and cleaned the run directory
            if distributed.is_main() and recipe.stages.export.enabled:
                from edgedistill import preflight

                preflight.run(ctx)
        ctx.event("run_start", target=target.name, recipe=recipe.name, device=str(ctx.device))
        with distributed.failures_shared():
            state = _run_stages(ctx, recipe, target, out)
        ctx.event("run_done")
        return state


def _context(recipe: Recipe, target: TargetProfile, out: Path, quiet: bool) -> Context:
    """The device set up, the task's data loaded, every stage's recipe x target check passed."""
    device = pick_device(recipe.device)
    if device.type == "cpu":
        _deterministic(recipe.training.compile)  # same recipe and seed, same numbers
    else:
        torch.backends.cudnn.benchmark = True  # fastest kernels over bit-exact reruns on the GPU
    task = for_dataset(recipe.data.dataset)
    preprocess = family_of(recipe.teacher.arch).preprocessing(recipe.teacher)
    data = task.load(recipe.data, recipe.seed, recipe.teacher.path, preprocess).to(device)
    if recipe.stages.distill.data_free.enabled:  # no stage sees the training split; distill generates one
        data = data.with_training(data.x_test[:0], data.y_test[:0])
    progress = None
    if not quiet:
        from edgedistill.progress import StageProgress

        progress = StageProgress()
    ctx = Context(recipe, target, out, device, data, task, quiet, progress=progress)
    for note in data.notes:
        ctx.warn(note)
    for stage in _stages():  # recipe x target conflicts, before any training
        if stage.config(recipe).enabled:
            stage.validate(recipe, target)
    return ctx


def _write_inputs(ctx: Context) -> None:
    """The resolved recipe (it marks a run directory), the target and the environment."""
    io.write_yaml(ctx.out / rundir.MARKER, ctx.recipe.model_dump(mode="json"))
    io.write_yaml(ctx.out / "target.resolved.yaml", ctx.target.model_dump(mode="json"))
    io.write_json(ctx.out / "environment.json", environment.collect(str(ctx.device)))


def _run_stages(ctx: Context, recipe: Recipe, target: TargetProfile, out: Path) -> State:
    state, fingerprint, stages = State(), "", _stages()
    for index, stage in enumerate(stages, start=1):
        fingerprint = _fingerprint(fingerprint, recipe, target, stage.name, stage.uses_target)
        stage_dir, label = out / f"{index:02d}-{stage.name}", f"[{index}/{len(stages)}] {stage.name}"
        off = "disabled in the recipe" if not stage.config(recipe).enabled else stage.not_applicable(ctx)
        if off:
            fingerprint += "-off"
            ctx.log(f"{label}: {off}")
        elif stage.main_only and not distributed.is_main():
            continue  # export, bench, report: files only rank 0 writes; the others wait at the end
        elif _finished(stage_dir, fingerprint):
            state.records[stage.name] = json.loads((stage_dir / "result.json").read_text())
            stage.restore(ctx, state, stage_dir)
            ctx.log(f"{label}: finished earlier, skipped (--force starts over)")
            ctx.event("stage_skipped", stage=stage.name)
        else:
            _execute(ctx, state, stage, stage_dir, fingerprint, label, seed=recipe.seed * 1000 + index)
    return state


def _finished(stage_dir: Path, fingerprint: str) -> bool:
    done = stage_dir / "done.json"
    return done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint


def _execute(ctx: Context, state: State, stage, stage_dir: Path, fingerprint: str, label: str, seed: int) -> None:
    """Run one stage in its (prepared) directory; its result.json, then done.json, mark it finished."""
    name = stage.name
    if distributed.is_main():
        _prepare_dir(stage_dir, fingerprint)
    if not stage.main_only:
        distributed.barrier()
    torch.manual_seed(seed)
    ctx.log(f"{label}: running")
    ctx.event("stage_start", stage=name)
    t0 = time.perf_counter()
    try:
        stage.run(ctx, state, stage_dir)
    except RefusedError as e:
        _record_refusal(ctx, name, stage_dir, e)
        raise
    record = state.records.setdefault(name, {})
    record["wall_s"] = round(time.perf_counter() - t0, 3)
    io.write_json(stage_dir / "result.json", record)
    io.write_json(stage_dir / "done.json", {"fingerprint": fingerprint, "finished": time.time()})
    ctx.event("stage_done", stage=name, wall_s=record["wall_s"], accuracy=record.get("accuracy"))
    acc = f", held-out accuracy {record['accuracy']:.4f}" if record.get("accuracy") is not None else ""
    ctx.log(f"{label}: done in {record['wall_s']:.1f}s{acc}")
    if not stage.main_only:
        distributed.barrier()  # done.json is written before any rank moves on


def _record_refusal(ctx: Context, name: str, stage_dir: Path, error: Exception) -> None:
    """NN-stage/refused.json, then the report, which opens with it: a refused run says so in its own files."""
    if not distributed.is_main():
        return
    io.write_json(stage_dir / REFUSED, {"stage": name, "message": str(error), "exit_code": 3})
    ctx.event("stage_refused", stage=name, message=str(error))
    from edgedistill import report

    with contextlib.suppress(Exception):  # the refusal itself is what the user must see
        report.write(ctx.out, report.build(ctx.out))


def _prepare_dir(stage_dir: Path, fingerprint: str) -> None:
    """Keep an interrupted stage's checkpoints only if they were made for the same inputs."""
    marker = stage_dir / rundir.STAGE_MARKER
    if stage_dir.exists() and not marker.exists() and any(stage_dir.iterdir()):
        raise UserError(f"--out {stage_dir.parent}: {stage_dir.name} is not a stage folder of a run (it has no "
                        f"{marker.name}); move it out of --out, which the run needs to write {stage_dir.name} in")
    if stage_dir.exists() and (not marker.exists() or marker.read_text() != fingerprint or (stage_dir / "done.json").exists()):
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / REFUSED).unlink(missing_ok=True)  # an earlier attempt's verdict; this one decides anew
    io.write_text(marker, fingerprint)
