"""The resized images of a folder kept as one uint8 .npy file (N, C, H, W), so that later epochs and runs read
rows instead of decoding photos. The name is a hash of everything that decides the pixels: each file's path,
size and modification time, and the Preprocess; any change is a miss and a new file (old ones stay until
deleted). Written once, atomically (edgedistill.io); rows are read with pread, so reading them does not map the
file into the process (its memory stays one batch)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from edgedistill import io
from edgedistill.data.preprocess import Preprocess
from edgedistill.errors import UserError

FORMAT = 1  # bump when the stored pixels of the same inputs change


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgedistill" / "images"


def path_for(folder: Path, files: list[Path], pre: Preprocess) -> Path:
    h = hashlib.sha256(json.dumps([FORMAT, pre.to_dict()]).encode())
    for f in files:
        try:
            st = f.stat()
        except OSError as e:
            raise UserError(f"data.path: {f} cannot be read ({e.strerror}); replace or remove it") from None
        h.update(f"\0{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    rh, rw = pre.resize
    return folder / f"images-{h.hexdigest()[:20]}-{len(files)}x{pre.channels}x{rh}x{rw}.npy"


def build(path: Path, shape: tuple[int, ...], batches: Iterable[torch.Tensor]) -> None:
    """Write the uint8 batches, in file order, as one .npy of `shape`; nothing is left behind if it fails."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for batch in batches:
            f.write(batch.numpy().tobytes())
        f.flush()
        os.fsync(f.fileno())


class Rows:
    """Rows of a cache file, read by index."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        with open(path, "rb") as f:
            found, dtype = None, None
            if np.lib.format.read_magic(f) == (1, 0):  # what build writes
                found, _, dtype = np.lib.format.read_array_header_1_0(f)
            self.offset = f.tell()
        if tuple(found) != tuple(shape) or dtype != np.uint8:
            raise UserError(f"data.cache: {path} holds {found} {dtype}, not uint8 {shape}; delete it and rerun")
        self.path, self.shape, self.row = path, tuple(shape), int(np.prod(shape[1:]))

    def read(self, ids: list[int]) -> torch.Tensor:
        buf = bytearray(self.row * len(ids))
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            for k, i in enumerate(ids):
                buf[k * self.row : (k + 1) * self.row] = os.pread(fd, self.row, self.offset + i * self.row)
        return torch.frombuffer(buf, dtype=torch.uint8).view(len(ids), *self.shape[1:])
