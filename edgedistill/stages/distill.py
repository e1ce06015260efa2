"""distill: train the student from the teacher the way its task says (logit KD with feature or attention
terms and born-again generations for classifiers; sequence-level KD for language models). With `data_free`,
the student learns on generated images instead (edgedistill.distill.datafree), and the teacher-labelled
transfer set it leaves is the training split of every later stage (its typed output)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgedistill import io
from edgedistill.stages.base import STAGES, Stage
from edgedistill.training import accuracy, predict


@dataclass(frozen=True)
class TransferSet:
    """Generated training images with the teacher's labels (data-free distillation)."""

    x: torch.Tensor
    y: torch.Tensor


def _data_free(ctx, state, cfg, stage_dir) -> tuple[dict, TransferSet]:
    """Train student and generator, then keep a transfer set of generated images for the later stages."""
    from edgedistill import distributed
    from edgedistill.distill import datafree
    from edgedistill.errors import UserError

    if distributed.world_size() > 1:
        raise UserError("stages.distill.data_free: runs in one process; start it without torchrun")
    df, teacher = cfg.data_free, state.teacher.module
    generator = datafree.Generator(df.z_dim, ctx.data.spec.input_shape, df.width).to(ctx.device)
    history = datafree.train(
        teacher, state.student.module, generator, cfg, checkpoint=stage_dir / "checkpoint.pt", device=ctx.device,
        evaluate=lambda m: accuracy(predict(m, ctx.data.x_test), ctx.data.y_test), progress=ctx.progress,
        on_epoch=lambda r: ctx.event("epoch", stage="distill", **r), say=ctx.log)
    io.save_torch(stage_dir / "generator.pt", generator.state_dict())
    x, y = datafree.synthesize(generator, teacher, df.transfer_set, df.batch_size, ctx.recipe.seed, ctx.device)
    io.save_torch(stage_dir / "transfer_set.pt", {"x": x.cpu(), "y": y.cpu()})
    share = torch.bincount(y, minlength=ctx.data.spec.num_classes).float() / len(y)
    confidence = torch.softmax(predict(teacher, x), -1).amax(-1).mean()
    return {"temperature": cfg.temperature, "history": history, "data_free": df.model_dump(),
            "transfer_set": {"images": len(y), "class_share": [round(float(v), 4) for v in share],
                             "teacher_confidence": float(confidence)}}, TransferSet(x, y)


@STAGES.register("distill")
class Distill(Stage):
    name, position = "distill", 30

    def run(self, ctx, state, stage_dir):
        cfg = ctx.recipe.stages.distill
        if cfg.data_free.enabled:
            info, state.outputs["distill"] = _data_free(ctx, state, cfg, stage_dir)
        else:
            info = ctx.task.distill(ctx, state, stage_dir)
        ctx.family(ctx.recipe.student).save(state.student, stage_dir)
        state.records["distill"] = {"name": "distill", **ctx.task.evaluate(state.student, ctx, state), **info}

    def restore(self, ctx, state, stage_dir):
        state.student = ctx.family(ctx.recipe.student).load(stage_dir, ctx.data.spec, ctx.device)
        if ctx.recipe.stages.distill.data_free.enabled:
            kept = io.load_torch(stage_dir / "transfer_set.pt")
            state.outputs["distill"] = TransferSet(kept["x"].to(ctx.device), kept["y"].to(ctx.device))
