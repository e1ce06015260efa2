"""What a run directory holds, so that --force deletes only a run's own files and a rerun sweeps what a
killed run left half-written. Nothing here touches a file that edgedistill did not write."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
from pathlib import Path
from typing import Iterator

from edgedistill.errors import UserError

# Written only after recipe, target and data validated: its presence says the folder is a run directory.
MARKER = "recipe.resolved.yaml"
FILES = {MARKER, "target.resolved.yaml", "environment.json", "events.jsonl", "preflight.json", "report.json",
         "report.md", "report.html", ".lock"}
STAGE_DIR = re.compile(r"\d\d-[a-z_]+")
STAGE_MARKER = "fingerprint"  # the first file pipeline._prepare_dir writes in a stage directory


def is_stage_dir(path: Path) -> bool:
    return bool(STAGE_DIR.fullmatch(path.name)) and path.is_dir() and (path / STAGE_MARKER).is_file()


def is_temporary(path: Path) -> bool:
    """A sibling io.atomic_path made (`.NAME.<random>.tmp/`, holding at most NAME): a write a kill cut short."""
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp") and path.is_dir() and not path.is_symlink()):
        return False
    final = name[1:-len(".tmp")].rpartition(".")[0]
    return all(p.name == final for p in path.iterdir())


def is_ours(path: Path) -> bool:
    return path.name in FILES or is_stage_dir(path) or is_temporary(path)


def check_force(out: Path) -> None:
    """--force on a folder that is not a run directory: refuse before anything is read or deleted."""
    foreign = sorted(p.name for p in out.iterdir() if not is_ours(p))
    if foreign and not (out / MARKER).is_file():
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"--out {out}: not an edgedistill run directory (it holds {shown}), so --force will not "
                        "empty it; choose a new or empty directory for --out")


def clear(out: Path) -> None:
    """Delete a run's own files (--force); anything else in the folder stays."""
    for path in out.iterdir():
        if path.name != ".lock" and is_ours(path):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def sweep(out: Path) -> None:
    """Remove the temporaries of a killed run (a live one holds the lock, so none of them is being written)."""
    folders = [out, *(p for p in out.iterdir() if is_stage_dir(p))]
    for folder in folders:
        found = folder.glob(".*.tmp") if folder == out else folder.rglob(".*.tmp")
        for path in [p for p in found if is_temporary(p)]:
            shutil.rmtree(path, ignore_errors=True)


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so every `finally` (temporaries, the lock) runs before it dies."""


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    def handler(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
