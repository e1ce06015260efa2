"""prune: remove whole channels/neurons to the recipe's MACs budget (widths rounded to the target's
channel multiple), then let the teacher heal the student with KD recovery epochs."""

from __future__ import annotations

from edgedistill import io
from edgedistill.pruning import prune_to_macs, reshape_to, widths
from edgedistill.stages.common import agreement, evaluate, make_task, train

USES_TARGET = True  # the channel multiple comes from the target


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.prune
    round_to = cfg.round_to or ctx.target.channel_multiple
    before = state.student.size()
    pruned_file = stage_dir / "pruned.pt"
    if pruned_file.exists():  # resuming: the channels were removed already, recovery was interrupted
        reshape_to(state.student.module, io.load_torch(pruned_file))
        ratio = None
    else:
        module, ratio = prune_to_macs(state.student.module, state.student.spec, cfg.macs_ratio,
                                      importance=cfg.importance, round_to=round_to, ignore=cfg.ignore)
        state.student.module = module
        io.save_torch(pruned_file, module.state_dict())
    state.student.channels = widths(state.student.module)[:-1]
    after_prune = evaluate(state.student, ctx)
    task = make_task(ctx, state, cfg, state.student.module)
    history = train(ctx, "prune", state.student.module, task, stage_dir)
    task.close()
    io.save_torch(stage_dir / "model.pt", state.student.module.state_dict())
    state.records["prune"] = {
        "name": "prune", **evaluate(state.student, ctx), "history": history,
        "channels": state.student.channels, "round_to": round_to, "channel_ratio": ratio,
        "macs_before": before["macs"], "params_before": before["params"],
        "macs_kept": after_prune["macs"] / before["macs"], "accuracy_before_recovery": after_prune["accuracy"],
        "agreement_with_teacher": agreement(state.student, state.teacher, ctx),
    }
    return state


def restore(ctx, state, stage_dir):
    reshape_to(state.student.module, io.load_torch(stage_dir / "model.pt"))
    state.student.channels = widths(state.student.module)[:-1]
    return state
