"""Training inside a run: training.fit with the run's data, recipe settings, progress and event log."""

from __future__ import annotations

from pathlib import Path


def training_data(ctx, state):
    """The training split every stage trains and calibrates on: the data's, or the transfer set a data-free
    distillation generated."""
    transfer = state.outputs.get("distill") if state is not None else None
    return ctx.data.with_training(transfer.x, transfer.y) if transfer is not None else ctx.data


def stage_augment(ctx, cfg):
    return cfg.augment if cfg.augment is not None else ctx.recipe.data.augment


def train(ctx, state, name: str, model, loss, stage_dir: Path, checkpoint_name: str = "checkpoint.pt", cfg=None,
          **kw) -> list[dict]:
    """training.fit with what every stage passes the same way: data, batch size, seed, augmentation, device
    settings, progress and the event log."""
    from edgedistill.training import fit

    cfg = cfg or getattr(ctx.recipe.stages, name)
    data = kw.pop("data", None) or training_data(ctx, state)
    return fit(model, loss, data, cfg, stage=name, checkpoint=stage_dir / checkpoint_name,
               batch_size=ctx.recipe.data.batch_size, seed=ctx.recipe.seed, augment=stage_augment(ctx, cfg),
               training=ctx.recipe.training, progress=ctx.progress,
               on_epoch=lambda r: ctx.event("epoch", stage=name, **r), say=ctx.log, **kw)
