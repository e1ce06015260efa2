"""export: the format the target loads and every format the recipe's stages.export.formats selects for the run's
task, plus the files the others start from, each written by its registered exporter (edgedistill.exporters).
Every file is checked against the model it came from on the held-out inputs; beyond tolerance the run stops
(exit 3). The target's own format must be written; another format's failure is recorded ("failed_formats") while
the run goes on."""

from __future__ import annotations

import shutil

from edgedistill import exporters, io
from edgedistill.errors import RefusedError, UserError
from edgedistill.exporters.job import ExportJob
from edgedistill.exporters.onnx import exporter_failure
from edgedistill.stages.base import STAGES, Stage


def _remove(path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _export(ctx, state, stage_dir):
    cfg, target, task = ctx.recipe.stages.export, ctx.target, ctx.data.spec.task
    for stale in stage_dir.glob("**/*.refused*"):  # an earlier attempt's refusals
        _remove(stale)
    job = ExportJob(ctx, state, stage_dir)
    required = exporters.required_format(task, target)
    chosen = exporters.selected(task, [*cfg.formats, required])  # the file the target loads, whatever formats say
    if exporters.own_format(target.runtime, task) and required not in cfg.formats:
        ctx.log(f"    {target.name} loads the '{required}' format: written besides stages.export.formats")
    failed = []
    for exporter in chosen:
        try:
            for artifact in exporter.export(job):
                job.artifacts.append(artifact)
                ctx.log(f"    wrote {job.rel(artifact.path)} ({io.dir_size(artifact.path):,} bytes)")
        except Exception as e:  # noqa: BLE001 (an extra never stops the run, whatever its converter raised)
            if exporter.always or exporter.format == required:
                raise
            reason = str(e) if isinstance(e, RefusedError) else exporter_failure(e)
            failed.append({"format": exporter.format, "required": required, "reason": reason})
            ctx.log(f"    warning: {exporter.format} export failed ({reason}); {target.name} ships {required}, so "
                    f"the run goes on without {exporter.format}")
    _check_deployable(job)
    written = {e.format for e in chosen}
    skipped = {f: f"not written for {task} models" for f in cfg.formats if f not in written}
    state.records["export"] = {"name": "export", "artifacts": [a.record(ctx.out) for a in job.artifacts],
                               "parity": [rung for a in job.artifacts for rung in a.parity],
                               "usage": exporters.usage(task, ctx.data.spec), "failed_formats": failed,
                               **({"skipped": skipped} if skipped else {})}


def _check_deployable(job) -> None:
    """Each student file's operators against the target's runtime (edgedistill.deployability), for the formats
    that runtime loads."""
    from edgedistill.deployability import check_file, summarize

    target = job.target
    for art in job.artifacts:
        if art.role == "student" and target.runtime in exporters.EXPORTERS.get(art.exporter).checked_on:
            art.fields["deployability"] = summarize(check_file(art.path, target))
            if not art.fields["deployability"]["ok"]:
                job.log(f"    {job.rel(art.path)}: {target.name} cannot run "
                        f"{', '.join(art.fields['deployability']['unsupported'])}")


@STAGES.register("export")
class Export(Stage):
    name, position = "export", 70
    uses_target = True
    main_only = True  # under torchrun, rank 0 alone

    def validate(self, recipe, target) -> None:
        """The format the target loads must be writable here: found before training, not after it."""
        if not recipe.stages.export.enabled:
            return
        own = exporters.own_format(target.runtime)
        if own is not None and (why := own.missing()):
            raise UserError(f"target: {target.name} loads {own.suffix} files, which this machine cannot write: {why}")

    def run(self, ctx, state, stage_dir):
        _export(ctx, state, stage_dir)
