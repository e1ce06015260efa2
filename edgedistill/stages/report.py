"""report: report.json (the stable contract), report.md and report.html from the run's recorded results."""

from __future__ import annotations

from edgedistill import report
from edgedistill.stages.base import STAGES, Stage


@STAGES.register("report")
class Report(Stage):
    name, position = "report", 90
    uses_target = True
    main_only = True  # under torchrun, rank 0 alone

    def run(self, ctx, state, stage_dir):
        data = report.build(ctx.out, finishing=True)
        report.write(ctx.out, data)
        state.records["report"] = {"name": "report", "summary": data["summary"]}
