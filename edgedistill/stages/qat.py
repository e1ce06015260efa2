"""qat: quantization-aware fine-tuning in int8 (torchao PT2E fake-quant), the teacher still supervising. Its
output is the converted int8 student, the reference for its export."""

from __future__ import annotations

import copy

from edgedistill import io, quantize
from edgedistill.families import size
from edgedistill.stages.base import STAGES, Stage
from edgedistill.tasks.fitting import train
from edgedistill.training import accuracy, predict


def _prepared(ctx, state):
    scheme = quantize.scheme_for(ctx.target)
    fp32_blocks = state.plan.fp32 if state.plan is not None else []
    return quantize.prepare_qat(copy.deepcopy(state.student.module), state.student.spec, scheme, fp32_blocks,
                                weight_range=ctx.target.int8_weight_range)


@STAGES.register("qat")
class QAT(Stage):
    name, position = "qat", 60
    uses_target = True

    def not_applicable(self, ctx) -> str | None:
        if reason := super().not_applicable(ctx):
            return reason
        if ctx.family(ctx.recipe.student).int8 == "dynamic":
            return "not applicable to transformers: export quantizes them dynamically (integer MatMuls)"
        return None

    def validate(self, recipe, target) -> None:
        from edgedistill.errors import UserError

        if recipe.stages.qat.enabled and (why := quantize.scheme_missing(quantize.scheme_for(target))):
            raise UserError(f"target: {target.name}: {why}; or set stages.qat.enabled=false")

    def run(self, ctx, state, stage_dir):
        cfg = ctx.recipe.stages.qat
        if state.all_fp32:  # the precision plan found no int8 block worth its overhead
            state.records["qat"] = {"name": "qat", "skipped": f"precision plan is {state.plan.verdict}"}
            ctx.log(f"    skipped: the precision plan is {state.plan.verdict}")
            return
        prepared = _prepared(ctx, state)
        scheme = quantize.scheme_for(ctx.target)
        loss = ctx.task.kd(ctx, state, "qat", cfg, prepared)
        history = train(ctx, state, "qat", prepared, loss, stage_dir, set_mode=quantize.set_mode)
        fake_quant = predict(prepared, ctx.data.x_test, set_mode=quantize.set_mode)
        fake_quant_accuracy = accuracy(fake_quant, ctx.data.y_test)
        io.save_torch(stage_dir / "model.pt", prepared.state_dict())
        quantized = state.outputs["qat"] = quantize.convert(prepared)
        logits = predict(quantized, ctx.data.x_test, set_mode=quantize.set_mode)
        # The first int8 rung of the parity ladder: fake-quant training graph vs the converted int8 graph.
        rung = {"from": "student fake-quant (torch)", "to": "student int8 (torch)",
                "top1_agreement": float((fake_quant.argmax(-1) == logits.argmax(-1)).float().mean()),
                "max_abs": float((fake_quant - logits).abs().max())}
        state.records["qat"] = {
            "name": "qat", "accuracy": accuracy(logits, ctx.data.y_test), **size(state.student),
            "fake_quant_accuracy": fake_quant_accuracy, "history": history, "parity": [rung],
            "quantizer": f"torchao-pt2e {scheme}: {quantize.SCHEMES[scheme]}",
            "weight_range": list(ctx.target.int8_weight_range), "int8_arithmetic": ctx.target.arithmetic,
            "agreement_with_teacher": ctx.task.agreement_with_teacher(ctx, state, logits),
            **({"precision_plan": state.plan.summary()} if state.plan else {}),
        }

    def restore(self, ctx, state, stage_dir):
        if state.all_fp32:
            return
        prepared = _prepared(ctx, state)
        prepared.load_state_dict(io.load_torch(stage_dir / "model.pt"))
        state.outputs["qat"] = quantize.convert(prepared)
