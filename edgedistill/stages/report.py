"""report: report.json (the stable contract), report.md and report.html from the run's recorded results."""

from __future__ import annotations

from edgedistill import report

USES_TARGET = True
MAIN_ONLY = True  # under torchrun, rank 0 alone


def run(ctx, state, stage_dir):
    data = report.build(ctx.out, finishing=True)
    report.write(ctx.out, data)
    state.records["report"] = {"name": "report", "summary": data["summary"]}
    return state


def restore(ctx, state, stage_dir):
    # The files are rebuilt from disk anyway; keep the summary for the CLI's last line.
    return state
