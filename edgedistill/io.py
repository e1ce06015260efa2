"""Atomic file writes and the run-directory lock: a killed run never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from edgedistill.errors import UserError

FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def naming_full_disk(path: Path) -> Iterator[None]:
    """A full disk raised while writing `path` names `path` (a write() or fsync() error names no file, and
    a temporary sibling's name means nothing to the user)."""
    try:
        yield
    except OSError as e:
        if e.errno not in FULL or e.filename == str(path):
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write into; it replaces `path` only if the block succeeds.

    Works for files and directories (an .mlpackage is a directory)."""
    path = Path(path)
    with naming_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        target = tmp / path.name
        try:
            yield target
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(target, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _writes() -> bool:
    """Under torchrun only rank 0 writes; the other ranks compute the same results and discard them."""
    from edgedistill import distributed

    return distributed.is_main()


def write_bytes(path: Path, data: bytes) -> None:
    if not _writes():
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def save_torch(path: Path, obj: Any) -> None:
    """torch.save, atomically. Serialized in memory first: torch's own file writer reports a full disk as a
    RuntimeError ('unexpected pos'), while write_bytes raises the OSError(ENOSPC) the CLI explains."""
    import io as _io

    import torch

    if not _writes():
        return
    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


RESAVE = "re-save it with torch.save(model.state_dict(), path)"


def load_torch(path: Path, field: str | None = None) -> Any:
    """Load a checkpoint without executing code: only tensors and plain containers. Errors name `field`, the
    recipe key that gave the file, and the file."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    where = f"{field}: {path}" if field else str(path)
    if path.is_dir():
        raise UserError(f"{where} is a directory, not a checkpoint file; give the .pt file torch.save wrote")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{where} is empty (0 bytes), not a torch checkpoint; {RESAVE}")
    try:
        with warnings.catch_warnings():  # torch's multi-line notes on pickle protocols: the error below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # refusals of code name the GLOBAL they would import
            reason = str(e).partition("WeightsUnpickler error:")[2].strip() or str(e)
            raise UserError(f"{where} is not a readable torch checkpoint (a plain pickle or another format: "
                            f"{reason.splitlines()[0][:80]}); {RESAVE}") from None
        raise UserError(
            f"{where}: refused to load, it holds Python objects beyond tensors (a pickle could run code); "
            "save a plain state_dict with torch.save(model.state_dict(), path)"
        ) from None
    except FileNotFoundError:
        raise UserError(f"{where}: file not found") from None
    except (RuntimeError, EOFError, OSError) as e:
        why = " ".join(str(e).split()).split(". ")[0][:80] or e.__class__.__name__
        raise UserError(f"{where} is truncated or corrupt, not a readable torch checkpoint ({why}); {RESAVE}") from None


def set_aside(path: Path) -> Path:
    """Rename a refused artifact (file or directory) to NAME.refused.SUFFIX, replacing an older one, so that
    nothing loads it by its usual name; returns the new path."""
    import shutil

    path = Path(path)
    refused = path.with_name(f"{path.stem}.refused{path.suffix}")
    if refused.is_dir():
        shutil.rmtree(refused)
    elif refused.exists():
        refused.unlink()
    if path.exists():
        path.rename(refused)
    return refused


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class RunLock:
    """An exclusive flock on OUT/.lock. The kernel drops it when the process dies (even kill -9),
    so a stale lock file from a dead run never blocks the next one. The file is removed when the run ends,
    and so is OUT when this run created it and left nothing in it (a run refused before it wrote anything)."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> "RunLock":
        out = self.path.parent
        self._created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno in FULL:
                raise
            raise UserError(f"--out {out}: cannot create it ({e.strerror or e}); choose a writable directory") from None
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if e.errno in FULL:
                    raise
                raise UserError(f"--out {out}: cannot write in it ({e.strerror or e}); choose a writable directory") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UserError(
                    f"--out {self.path.parent}: a live run (pid {holder}) holds this directory; "
                    "wait for it to finish or choose another --out"
                ) from None
            if not self._same_file(fd):  # locked a file its finished holder had just removed: open the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # removed while still held: no other run can have it
                self.path.unlink()
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            if self._created:
                with contextlib.suppress(OSError):  # not empty: the run wrote something a rerun needs
                    self.path.parent.rmdir()
