"""The epoch loop every training loop runs around its own steps: resume from the last finished epoch, RNG
state kept with the checkpoint, a stop on a non-finite loss, the per-epoch history, the progress bar, the
time estimate and on_epoch."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch

from edgedistill.errors import RefusedError
from edgedistill.io import load_torch, save_torch
from edgedistill.progress import begin


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_epochs(
    train_epoch: Callable[[int, Callable[[], None]], dict[str, float]],
    *,
    stage: str,
    checkpoint: Path,
    epochs: int,
    steps: int,
    samples: int,
    state: Callable[[], dict],
    restore: Callable[[dict], None],
    schedule: Callable[[], float],
    evaluate: Callable[[], float],
    non_finite: Callable[[float, int], str],
    world_size: int = 1,
    sync: Callable[[], None] = lambda: None,
    progress=None,
    on_epoch: Callable[[dict], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run epochs up to `epochs`; returns the history, one record per epoch.

    `train_epoch(epoch, step)` trains one epoch (0-based), calls `step()` after each of its `steps` steps and
    returns its mean losses ("loss" among them). A non-finite loss raises RefusedError(non_finite(loss,
    epoch number)) before anything is saved, so the checkpoint keeps the last good epoch. After a finite
    epoch: `schedule()` steps the schedules and returns the learning rate, `evaluate()` the held-out accuracy;
    then `state()` (the caller's models and optimizers), the RNG states and the history go to `checkpoint`
    (atomically). When that file exists at the start, `restore(saved)` gets it back and the loop continues
    after its last epoch: with the RNG as it was, a resumed run draws what an uninterrupted one would.
    `samples` per epoch and `sync` (a device barrier) make the records' throughput."""
    history: list[dict] = []
    if checkpoint.exists():
        saved = load_torch(checkpoint)
        restore(saved)
        set_rng_state(saved["rng"])
        history = list(saved["history"])
    estimate = begin(say, stage, checkpoint, len(history), epochs, steps, sync)

    def step() -> None:
        estimate.step()
        if progress:
            progress.advance()

    if progress:
        progress.start(stage, total=epochs * steps, done=len(history) * steps)
    try:
        for epoch in range(len(history), epochs):
            sync()
            t0 = time.perf_counter()
            record = train_epoch(epoch, step)
            sync()
            seconds = time.perf_counter() - t0
            if not math.isfinite(record["loss"]):
                raise RefusedError(non_finite(record["loss"], epoch + 1))
            record.update(epoch=epoch + 1, lr=schedule(), seconds=seconds,
                          samples_per_s=samples / max(seconds, 1e-9), world_size=world_size,
                          test_accuracy=evaluate())
            history.append(record)
            save_torch(checkpoint, {**state(), "rng": rng_state(), "history": history})
            if progress:
                progress.epoch(record)
            if on_epoch:
                on_epoch(record)
    finally:
        if progress:
            progress.stop()
    return history
