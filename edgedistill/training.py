"""The training loop every training stage shares: epochs, optimizer, schedule, per-epoch checkpoints
(resume after a kill), a NaN guard, and held-out accuracy for the loss curves."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgedistill.errors import RefusedError
from edgedistill.io import load_torch, save_torch
from edgedistill.recipe import TrainStage

Task = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict]
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
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train `model` in place for cfg.epochs; returns the per-epoch history.

    After every epoch the model, optimizer and history go to `checkpoint` (atomically); if that file
    exists when fit starts, training continues after its last epoch. Batches are shuffled by a generator
    seeded with (seed, epoch), so a resumed run sees the same batches an uninterrupted one would."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg))
    history: list[dict] = []
    start = 0
    if checkpoint.exists():
        state = load_torch(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start = len(history)
    n = len(data.x_train)
    for epoch in range(start, cfg.epochs):
        set_mode(model, True)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        sums: dict[str, float] = {}
        seen = 0
        t0 = time.perf_counter()
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size].to(data.x_train.device)
            x, y = data.x_train[idx], data.y_train[idx]
            losses = task(model, x, y)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise RefusedError(
                    f"stage {stage}: loss became {float(loss.detach())} in epoch {epoch + 1}; stopped, the last good "
                    f"checkpoint is kept ({checkpoint.name}); lower stages.{stage}.lr and rerun to resume"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k, v in losses.items():
                if k != "output":
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(y)
            seen += len(y)
        scheduler.step()
        record = {k: v / seen for k, v in sums.items()}
        record.update(
            epoch=epoch + 1,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - t0,
            samples_per_s=seen / max(time.perf_counter() - t0, 1e-9),
            test_accuracy=accuracy(predict(model, data.x_test, set_mode=set_mode), data.y_test),
        )
        history.append(record)
        save_torch(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "history": history})
        if on_epoch:
            on_epoch(record)
    set_mode(model, False)
    return history
