"""A progress bar per training stage: ETA, samples/s and every loss term, updated each epoch; and the
estimate said before a stage's epochs run."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class StageProgress:
    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task = None

    def start(self, stage: str, total: int, done: int = 0) -> None:
        self._progress = Progress(
            TextColumn("    {task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
            console=Console(stderr=True), transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(stage, total=total, completed=done, stats="")

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def epoch(self, record: dict) -> None:
        if self._progress is None:
            return
        terms = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k.endswith("loss"))
        stats = (f"epoch {record['epoch']}  {record['samples_per_s']:,.0f} samples/s  {terms}  "
                 f"held-out acc {record['test_accuracy']:.4f}")
        self._progress.update(self._task, stats=stats)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def duration(seconds: float) -> str:
    """'0.25 s', '4.2 s', '12 min', '3.5 h', '2.0 days': as precise as an estimate deserves."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Estimate:
    """Times the first steps a stage runs and says once, before its epochs run their course, how long they will
    take: '~3 epochs x 1.2 s = about 4 s'. The very first step (one-time costs) is left out when there are others."""

    MEASURED = 3

    def __init__(self, say, epochs: int, steps: int, sync=lambda: None) -> None:
        self._say, self._epochs, self._steps, self._sync = say, epochs, steps, sync
        self._skip = 1 if steps > 1 else 0
        self._measured = min(self.MEASURED, steps - self._skip)
        self._done = 0
        self._t0 = time.perf_counter()

    def step(self) -> None:
        if self._say is None:
            return
        self._done += 1
        if self._done == self._skip:
            self._sync()
            self._t0 = time.perf_counter()
        elif self._done == self._skip + self._measured:
            self._sync()
            epoch = (time.perf_counter() - self._t0) / self._measured * self._steps
            self._say(f"    ~{self._epochs} epoch{'s' if self._epochs != 1 else ''} x {duration(epoch)} = about "
                      f"{duration(epoch * self._epochs)}")
            self._say = None


def begin(say, stage: str, checkpoint, done: int, epochs: int, steps: int, sync=lambda: None) -> Estimate:
    """Before a stage's epochs: say where a resumed stage continues, and time its first steps (Estimate)."""
    if say and done:
        where = f"at epoch {done + 1} of {epochs}" if done < epochs else f"after its last epoch ({epochs})"
        say(f"    {stage}: resuming {where} from {checkpoint.name}")
    return Estimate(say, epochs - done, steps, sync)
