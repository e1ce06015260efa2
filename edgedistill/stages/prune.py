"""prune: remove whole channels/neurons (widths rounded to the target's channel multiple), or whole residual
blocks, until the budgets hold, step by step with the teacher healing the student in between, and measure
every step: MACs, params, held-out accuracy and the latency of an exported copy. A step that removed MACs
but did not make the export faster is flagged "pruned but not faster"."""

from __future__ import annotations

import json

from edgedistill import depth_pruning, io, latency
from edgedistill.errors import RefusedError, UserError
from edgedistill.models import count_macs_params
from edgedistill.pruning import prune_step, reshape_to, widths
from edgedistill.stages.common import evaluate, make_task, train
from edgedistill.targets import host_conv_block

USES_TARGET = True  # the channel multiple and the latency come from the target
NOT_FASTER = 0.97  # a step must cut measured p50 latency by at least 3% to count as faster


def not_applicable(recipe) -> str | None:
    if recipe.student.arch == "hf-lm":
        from edgedistill.stages.lm import NOT_APPLICABLE

        return NOT_APPLICABLE
    return None


def validate(recipe, target) -> None:
    """Checked before any stage runs: a latency budget needs a target this machine can time."""
    if recipe.stages.prune.latency_ms and not target.runs_on_host():
        raise UserError(f"stages.prune.latency_ms: {target.name} cannot be timed on this machine; use a "
                        "host target (x86-avx2, x86-avx512-vnni) or a macs_ratio/params_ratio budget")


def _measure(ctx, cfg, handle, step: int) -> dict:
    record = {"step": step, "channels": widths(handle.module)[:-1], **evaluate(handle, ctx)}
    if cfg.structure == "blocks" and not handle.spec.is_text:  # a transformer's layer count is in its widths
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
    task = make_task(ctx, state, "prune", cfg, state.student.module)
    history = train(ctx, "prune", state.student.module, task, stage_dir, checkpoint_name=name,
                    cfg=cfg.model_copy(update={"epochs": epochs}))
    task.close()
    return history


def _prune_steps(ctx, state, cfg, stage_dir, round_to: int) -> list[dict]:
    """Prune until the budgets hold; returns the evidence of every step (step 0 = before pruning)."""
    for leftover in stage_dir.glob("checkpoint_step*.pt"):  # steps restart from the distilled student
        leftover.unlink()
    spec = state.student.spec
    base_macs, base_params = count_macs_params(state.student.module, spec)
    steps = [_measure(ctx, cfg, state.student, 0)]
    calibration = (ctx.data.x_train[:256], ctx.data.y_train[:256])
    n_steps = cfg.max_steps if cfg.latency_ms else cfg.steps
    for i in range(1, n_steps + 1):
        if cfg.latency_ms:
            budget = {"max_macs": steps[-1]["macs"] * cfg.latency_step}
        else:
            budget = {"max_macs": base_macs * cfg.macs_ratio ** (i / n_steps) if cfg.macs_ratio else None,
                      "max_params": base_params * cfg.params_ratio ** (i / n_steps) if cfg.params_ratio else None}
        state.student.module = prune_step(state.student.module, spec, cfg, round_to=round_to,
                                          calibration=calibration, **budget)
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


def _padded_widths(cfg, round_to: int, spec) -> int | None:
    """The host's conv block when a CNN's latency is timed here and its widths are rounded to less than it:
    ONNX Runtime pads such widths back up on this CPU, so its timings cannot show what they save."""
    timed = (cfg.measure_latency or cfg.latency_ms) and cfg.structure == "channels"  # blocks keep their widths
    block = host_conv_block() if timed and not spec.is_text else None
    return block if block and round_to % block else None


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.prune
    round_to = cfg.round_to or ctx.target.channel_multiple
    if block := _padded_widths(cfg, round_to, state.student.spec):
        ctx.log(f"    widths rounded to {round_to}, but ONNX Runtime on this CPU runs convolutions in blocks of "
                f"{block} channels: latency measured here undercounts what pruning saves")
    pruned_file, steps_file = stage_dir / "pruned.pt", stage_dir / "steps.json"
    if pruned_file.exists() and steps_file.exists():  # resuming: steps done, the final recovery was interrupted
        reshape_to(state.student.module, io.load_torch(pruned_file))
        steps = json.loads(steps_file.read_text())
    else:
        steps = _prune_steps(ctx, state, cfg, stage_dir, round_to)
        io.save_torch(pruned_file, state.student.module.state_dict())
        io.write_json(steps_file, steps)
    state.student.channels = widths(state.student.module)[:-1]
    history = _recover(ctx, state, cfg, stage_dir, "checkpoint.pt", cfg.epochs)
    io.save_torch(stage_dir / "model.pt", state.student.module.state_dict())
    final = _measure(ctx, cfg, state.student, len(steps))
    first = steps[0]
    state.records["prune"] = {
        "name": "prune", **evaluate(state.student, ctx, state), "history": history,
        "channels": state.student.channels, "structure": cfg.structure, "round_to": round_to,
        "importance": cfg.importance, "scope": cfg.scope,
        "budget": {"macs_ratio": cfg.macs_ratio, "params_ratio": cfg.params_ratio, "latency_ms": cfg.latency_ms},
        "macs_before": first["macs"], "params_before": first["params"], "accuracy_before": first["accuracy"],
        "macs_kept": final["macs"] / first["macs"], "accuracy_before_recovery": steps[-1]["accuracy"],
        "steps": steps, "after_recovery": final, "flags": [s["step"] for s in steps if "flag" in s],
    }
    if block:
        state.records["prune"]["host_conv_block"] = block
    if state.student.arch == "hf":
        from edgedistill.models import hf

        state.records["prune"]["transformer"] = hf.shape(state.student.module)
    if "latency_ms" in final:
        state.records["prune"]["speedup"] = first["latency_ms"]["p50"] / final["latency_ms"]["p50"]
        state.records["prune"]["onnx_weight_ratio"] = final["onnx_weight_bytes"] / first["onnx_weight_bytes"]
    return state


def restore(ctx, state, stage_dir):
    reshape_to(state.student.module, io.load_torch(stage_dir / "model.pt"))
    state.student.channels = widths(state.student.module)[:-1]
    return state
