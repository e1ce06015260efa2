"""prune: remove whole channels/neurons (widths rounded to the target's channel multiple), or whole residual
blocks, until the budgets hold, step by step with the teacher healing the student in between, and measure
every step: MACs, params, held-out accuracy and the latency of an exported copy. A step that removed MACs
but did not make the export faster is flagged "pruned but not faster"."""

from __future__ import annotations

import json

from edgedistill import depth_pruning, io, latency
from edgedistill.data.split import split_of
from edgedistill.errors import RefusedError, UserError
from edgedistill.pruning import prune_step
from edgedistill.stages.base import STAGES, Stage
from edgedistill.targets import host_conv_block
from edgedistill.tasks.fitting import train, training_data

NOT_FASTER = 0.97  # a step must cut measured p50 latency by at least 3% to count as faster


def _measure(ctx, cfg, handle, step: int) -> dict:
    family = ctx.family(ctx.recipe.student)
    record = {"step": step, "channels": family.widths(handle.module)[:-1], **ctx.task.evaluate(handle, ctx)}
    if cfg.structure == "blocks" and not family.layered:  # a transformer's layer count is in its widths
        record["removed_blocks"] = depth_pruning.removed_blocks(handle.module)
    if cfg.measure_latency or cfg.latency_ms:
        lat = latency.measure(handle.module, handle.spec, ctx.target, repeats=200)
        record["onnx_weight_bytes"] = lat.pop("onnx_weight_bytes")
        record["latency_ms"] = lat
    return record


def _flag(steps: list[dict]) -> None:
    prev, cur = steps[-2], steps[-1]
    if "latency_ms" in cur and cur["macs"] < prev["macs"] and cur["latency_ms"]["p50"] >= NOT_FASTER * prev["latency_ms"]["p50"]:
        cur["flag"] = "pruned but not faster"


def _recover(ctx, state, cfg, stage_dir, name: str, epochs: int):
    task = ctx.task.kd(ctx, state, "prune", cfg, state.student.module)
    history = train(ctx, state, "prune", state.student.module, task, stage_dir, checkpoint_name=name,
                    cfg=cfg.model_copy(update={"epochs": epochs}))
    task.close()
    return history


def _prune_steps(ctx, state, cfg, stage_dir, round_to: int) -> list[dict]:
    """Prune until the budgets hold; returns the evidence of every step (step 0 = before pruning)."""
    for leftover in stage_dir.glob("checkpoint_step*.pt"):  # steps restart from the distilled student
        leftover.unlink()
    spec = state.student.spec
    base_macs, base_params = ctx.family(ctx.recipe.student).macs_params(state.student.module, spec)
    steps = [_measure(ctx, cfg, state.student, 0)]
    data = training_data(ctx, state)
    calibration = (split_of(data.x_train).head(256), data.y_train[:256])
    n_steps = cfg.max_steps if cfg.latency_ms else cfg.steps
    for i in range(1, n_steps + 1):
        if cfg.latency_ms:
            budget = {"max_macs": steps[-1]["macs"] * cfg.latency_step}
        else:
            budget = {"max_macs": base_macs * cfg.macs_ratio ** (i / n_steps) if cfg.macs_ratio else None,
                      "max_params": base_params * cfg.params_ratio ** (i / n_steps) if cfg.params_ratio else None}
        keep = ctx.family(ctx.recipe.student).prune_keep(state.student.module)
        state.student.module = prune_step(state.student.module, spec, cfg, round_to=round_to,
                                          calibration=calibration, keep=keep, **budget)
        if cfg.step_epochs and (cfg.latency_ms or i < n_steps):  # the last planned step heals in the final recovery
            _recover(ctx, state, cfg, stage_dir, f"checkpoint_step{i}.pt", cfg.step_epochs)
        steps.append(_measure(ctx, cfg, state.student, i))
        _flag(steps)
        ctx.log(f"    step {i}: {steps[-1]['macs']:,} MACs, accuracy {steps[-1]['accuracy']:.4f}"
                + (f", p50 {steps[-1]['latency_ms']['p50']:.3f} ms" if "latency_ms" in steps[-1] else "")
                + (f"  [{steps[-1]['flag']}]" if "flag" in steps[-1] else ""))
        last = steps[-1]
        if cfg.latency_ms and last["latency_ms"]["p50"] <= cfg.latency_ms and (  # every budget given holds
                cfg.macs_ratio is None or last["macs"] <= cfg.macs_ratio * base_macs) and (
                cfg.params_ratio is None or last["params"] <= cfg.params_ratio * base_params):
            break
    else:
        if cfg.latency_ms:
            raise RefusedError(f"prune: the latency budget {cfg.latency_ms} ms was not reached in {n_steps} steps "
                               f"(p50 {steps[-1]['latency_ms']['p50']:.3f} ms at {steps[-1]['macs']:,} MACs); "
                               "raise stages.prune.latency_ms or stages.prune.max_steps")
    return steps


def _padded_widths(cfg, round_to: int, family) -> int | None:
    """The host's conv block when a CNN's latency is timed here and its widths are rounded to less than it:
    ONNX Runtime pads such widths back up on this CPU, so its timings cannot show what they save."""
    timed = (cfg.measure_latency or cfg.latency_ms) and cfg.structure == "channels"  # blocks keep their widths
    block = host_conv_block() if timed and family.convolutional else None
    return block if block and round_to % block else None


def _prune(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.prune
    round_to = cfg.round_to or ctx.target.channel_multiple
    family = ctx.family(ctx.recipe.student)
    if block := _padded_widths(cfg, round_to, family):
        ctx.log(f"    widths rounded to {round_to}, but ONNX Runtime on this CPU runs convolutions in blocks of "
                f"{block} channels: latency measured here undercounts what pruning saves")
    pruned_file, steps_file = stage_dir / "pruned.pt", stage_dir / "steps.json"
    if pruned_file.exists() and steps_file.exists():  # resuming: steps done, the final recovery was interrupted
        family.reshape_to(state.student.module, io.load_torch(pruned_file))
        steps = json.loads(steps_file.read_text())
    else:
        steps = _prune_steps(ctx, state, cfg, stage_dir, round_to)
        io.save_torch(pruned_file, state.student.module.state_dict())
        io.write_json(steps_file, steps)
    history = _recover(ctx, state, cfg, stage_dir, "checkpoint.pt", cfg.epochs)
    family.save(state.student, stage_dir)
    final = _measure(ctx, cfg, state.student, len(steps))
    first = steps[0]
    state.records["prune"] = {
        "name": "prune", **ctx.task.evaluate(state.student, ctx, state), "history": history,
        "channels": family.widths(state.student.module)[:-1], "structure": cfg.structure, "round_to": round_to,
        "importance": cfg.importance, "scope": cfg.scope,
        "budget": {"macs_ratio": cfg.macs_ratio, "params_ratio": cfg.params_ratio, "latency_ms": cfg.latency_ms},
        "macs_before": first["macs"], "params_before": first["params"], "accuracy_before": first["accuracy"],
        "macs_kept": final["macs"] / first["macs"], "accuracy_before_recovery": steps[-1]["accuracy"],
        "steps": steps, "after_recovery": final, "flags": [s["step"] for s in steps if "flag" in s],
    }
    if block:
        state.records["prune"]["host_conv_block"] = block
    state.records["prune"].update(family.describe(state.student.module))
    if "latency_ms" in final:
        state.records["prune"]["speedup"] = first["latency_ms"]["p50"] / final["latency_ms"]["p50"]
        state.records["prune"]["onnx_weight_ratio"] = final["onnx_weight_bytes"] / first["onnx_weight_bytes"]


@STAGES.register("prune")
class Prune(Stage):
    name, position = "prune", 40
    uses_target = True  # the channel multiple and the latency come from the target

    def validate(self, recipe, target) -> None:
        """A latency budget needs a target this machine can time."""
        if recipe.stages.prune.latency_ms and not target.runs_on_host():
            raise UserError(f"stages.prune.latency_ms: {target.name} cannot be timed on this machine; use a "
                            "host target (x86-avx2, x86-avx512-vnni) or a macs_ratio/params_ratio budget")

    def run(self, ctx, state, stage_dir):
        _prune(ctx, state, stage_dir)

    def restore(self, ctx, state, stage_dir):
        state.student = ctx.family(ctx.recipe.student).load(stage_dir, ctx.data.spec, ctx.device)
