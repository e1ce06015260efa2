"""precision: choose which blocks of the student run int8 by measuring every int8/fp32 combination on the
target (edgedistill.precision). Its output, the plan, is what qat trains and export writes; a plan with no
int8 block means int8 does not pay on this target, and the report says so."""

from __future__ import annotations

import json

from edgedistill import io, precision
from edgedistill.data.split import split_of
from edgedistill.stages.base import STAGES, Stage
from edgedistill.tasks.fitting import training_data


@STAGES.register("precision")
class Precision(Stage):
    name, position = "precision", 50
    uses_target = True  # the latency that decides is the target's

    def not_applicable(self, ctx) -> str | None:
        if reason := super().not_applicable(ctx):
            return reason
        if ctx.family(ctx.recipe.student).int8 == "dynamic":
            return "not applicable to transformers: export quantizes their MatMuls dynamically"
        if not (ctx.recipe.stages.qat.enabled or ctx.recipe.stages.export.enabled):
            return "nothing is quantized: qat and export are off"
        return None

    def run(self, ctx, state, stage_dir):
        cfg = ctx.recipe.stages.precision
        data = training_data(ctx, state)
        train = split_of(data.x_train)
        check = slice(512, 512 + cfg.check_samples) if len(train) > 512 + 64 else slice(0, 512)
        x, y = train.head(check.stop).cpu().numpy(), data.y_train[: check.stop].cpu().numpy()
        calibration = x[:512]  # the export stage calibrates on the same inputs
        plan = precision.search_student(state.student.module, state.student.spec, calibration, x[check], y[check],
                                        ctx.target, tolerance=cfg.tolerance, budget_ms=cfg.latency_ms,
                                        keep_fp32=cfg.keep_fp32, rounds=cfg.rounds)
        io.write_json(stage_dir / "plan.json", plan.to_json())
        state.outputs["precision"] = plan
        state.records["precision"] = {"name": "precision", **plan.to_json()}
        ctx.log(f"    plan: int8 {', '.join(plan.int8) or '-'}; fp32 {', '.join(plan.fp32) or '-'} ({plan.verdict})")

    def restore(self, ctx, state, stage_dir):
        state.outputs["precision"] = precision.Plan.from_json(json.loads((stage_dir / "plan.json").read_text()))
