"""A progress bar per training stage: ETA, samples/s and every loss term, updated each epoch."""

from __future__ import annotations

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
