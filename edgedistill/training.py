"""The training loop every training stage shares: epochs, optimizer, schedule, augmentation on the device,
bf16 autocast and channels_last on CUDA, per-epoch checkpoints (an exact resume after a kill), a NaN guard,
and held-out accuracy for the loss curves."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgedistill import distributed
from edgedistill.data.augment import augment as augment_batch
from edgedistill.data.split import split_of
from edgedistill.epochs import run_epochs
from edgedistill.recipe import Augment, Training, TrainStage

Task = Callable[..., dict]
ModeSetter = Callable[[nn.Module, bool], None]


def _default_mode(model: nn.Module, training: bool) -> None:
    model.train(training)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
            set_mode: ModeSetter = _default_mode) -> torch.Tensor:
    set_mode(model, False)
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).float()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def _optimizer(params, cfg: TrainStage) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def _lr_factor(cfg: TrainStage) -> Callable[[int], float]:
    if cfg.schedule == "cosine":
        return lambda epoch: 0.5 * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    return lambda epoch: 1.0


def fit(
    model: nn.Module,
    task: Task,
    data,
    cfg: TrainStage,
    *,
    stage: str,
    checkpoint: Path,
    batch_size: int,
    seed: int,
    set_mode: ModeSetter = _default_mode,
    augment: Augment | None = None,
    training: Training | None = None,
    progress=None,
    on_epoch: Callable[[dict], None] | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    say: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train `model` in place for cfg.epochs; returns the per-epoch history.

    After every epoch the model, optimizer, scheduler, the task's own parameters (projections), the RNG
    states and the history go to `checkpoint` (atomically); if that file exists when fit starts, training
    continues after its last epoch. Shuffling and augmentation draw from a generator seeded by (seed,
    epoch), so a resumed run sees the same batches an uninterrupted one would."""
    training = training or Training()
    train = split_of(data.x_train)
    device = train.device
    cuda = device.type == "cuda"
    bf16 = training.precision == "bf16" or (training.precision == "auto" and cuda)
    image_batches = train.images
    channels_last = (training.channels_last if training.channels_last is not None else cuda) and image_batches
    if channels_last:
        model.to(memory_format=torch.channels_last)
    world, rank = distributed.world_size(), distributed.rank()
    step_model = model
    if world > 1:  # gradients averaged across ranks; the wrapped module keeps its forward hooks
        # A conv with one input channel has ambiguous strides; DDP warns about it harmlessly.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    step_model = torch.compile(step_model) if training.compile else step_model
    extra = list(task.parameters()) if isinstance(task, nn.Module) else []
    params = [p for p in [*model.parameters(), *extra] if p.requires_grad]
    optimizer = _optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg))
    # Each rank takes an equal share of every epoch's permutation (DDP needs the same number of steps on
    # every rank): the last n % world examples of a permutation sit that epoch out.
    n = len(train) // world * world

    def train_epoch(epoch: int, step: Callable[[], None]) -> dict[str, float]:
        set_mode(model, True)
        generator = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=generator, device=device)[:n][rank::world]
        sums: dict[str, torch.Tensor] = {}
        for idx, x in train.batches(order, batch_size, augment, generator):  # cropped (randomly, if asked)
            y = data.y_train[idx]
            if augment is not None and augment.active:
                x = augment_batch(x, augment, generator)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                losses = task(step_model, x, y, idx)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            distributed.average_gradients(extra)
            if cfg.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
            optimizer.step()
            for k, v in losses.items():  # summed on the device: no host sync per step
                if k != "output":
                    sums[k] = sums.get(k, 0) + v.detach().float() * len(y)
            step()
        return {k: float(distributed.sum_over_ranks(v)) / n for k, v in sums.items()}

    def restore(saved: dict) -> None:
        model.load_state_dict(saved["model"])
        if isinstance(task, nn.Module):
            task.load_state_dict(saved["task"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])

    def schedule() -> float:
        scheduler.step()
        return optimizer.param_groups[0]["lr"]

    def held_out() -> float:
        return evaluate(model) if evaluate else accuracy(predict(model, data.x_test, set_mode=set_mode), data.y_test)

    # A changed stage config changes the stage's fingerprint, and pipeline._prepare_dir then discards the kept
    # checkpoint: the advice must not promise a resume.
    history = run_epochs(
        train_epoch, stage=stage, checkpoint=checkpoint, epochs=cfg.epochs,
        steps=math.ceil(n // world / batch_size), samples=n, world_size=world,
        sync=torch.cuda.synchronize if cuda else lambda: None,
        state=lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(),
                       "task": task.state_dict() if isinstance(task, nn.Module) else {}},
        restore=restore, schedule=schedule, evaluate=held_out,
        non_finite=lambda loss, epoch: (
            f"stage {stage}: loss became {loss} in epoch {epoch}; stopped, the last good "
            f"checkpoint is kept ({checkpoint.name}); lower stages.{stage}.lr and rerun: the stage then starts "
            f"over (a changed stages.{stage} discards {checkpoint.name}), the stages before it are kept"),
        progress=progress, on_epoch=on_epoch, say=say)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    set_mode(model, False)
    return history
