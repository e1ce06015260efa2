"""A training split read from disk as it is needed: worker processes of a torch DataLoader decode the photos of
each batch (Pillow) into uint8 at the stored size (edgedistill.data.resize), in the order the epoch asks for;
on the training device they become floats, normalized, and cropped to the model's size. Memory is a few
batches, whatever the number of images. With a cache (edgedistill.data.image_cache) the rows are read instead."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from PIL import Image

from edgedistill.data.augment import crop
from edgedistill.data.image_cache import Rows
from edgedistill.data.preprocess import Preprocess
from edgedistill.data.resize import BadImage, stored
from edgedistill.data.sources import _why
from edgedistill.errors import UserError


class FileImages:
    def __init__(self, files):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def open(self, i: int) -> Image.Image:
        return Image.open(self.files[i])

    def name(self, i: int) -> str:
        return str(self.files[i])


class ArrayImages:
    """uint8 (N, H, W, C) arrays already in memory (an npz) seen as photos."""

    def __init__(self, x: np.ndarray, what: str):
        self.x, self.what = x, what

    def __len__(self) -> int:
        return len(self.x)

    def open(self, i: int) -> Image.Image:
        a = self.x[i]
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)

    def name(self, i: int) -> str:
        return f"{self.what} image {i}"


class Decode(torch.utils.data.Dataset):
    """Item i: the stored uint8 (C, H, W) tensor, or a one-line reason it cannot be had (raised by the reader:
    an exception in a worker process would arrive wrapped in its traceback)."""

    def __init__(self, images, pre: Preprocess):
        self.images, self.pre = images, pre

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor | str:
        try:
            with self.images.open(i) as im:
                return torch.from_numpy(np.ascontiguousarray(stored(im, self.pre)))
        except BadImage as e:
            return f"{self.images.name(i)} {e}"
        except Exception as e:  # unreadable, truncated, not an image at all
            return f"{self.images.name(i)} is not a readable image ({_why(e)}); replace or remove it"


def _collate(items: list) -> torch.Tensor | str:
    return next((i for i in items if isinstance(i, str)), None) or torch.stack(items)


def read_batches(decode: Decode, chunks: list[list[int]], workers: int, rows: Rows | None = None,
                 pin: bool = False) -> Iterator[torch.Tensor]:
    """uint8 (B, C, H, W) batches of the given image indices, in order."""
    if rows is not None:
        yield from (rows.read(c) for c in chunks)
        return
    workers = min(workers, len(chunks))
    loader = torch.utils.data.DataLoader(decode, batch_sampler=chunks, num_workers=workers, collate_fn=_collate,
                                         pin_memory=pin)  # prefetch: 2 batches a worker
    for batch in loader:
        if isinstance(batch, str):
            raise UserError(f"data.path: {batch}")
        yield batch


class StreamedImages:
    """A TrainSplit (edgedistill.data.split) of photos: `index` picks which of the decoded images it holds."""

    def __init__(self, decode: Decode, mean, std, workers: int, rows: Rows | None = None,
                 index: np.ndarray | None = None, device: torch.device = torch.device("cpu")):
        self.decode, self.workers, self.rows, self.device = decode, workers, rows, torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.index = np.arange(len(decode)) if index is None else index
        self.size = decode.pre.size
        self.images = True

    def __len__(self) -> int:
        return len(self.index)

    def _copy(self, **changes) -> "StreamedImages":
        kw = {"mean": self.mean, "std": self.std, "workers": self.workers, "rows": self.rows,
              "index": self.index, "device": self.device, **changes}
        return StreamedImages(self.decode, **kw)

    def to(self, device) -> "StreamedImages":
        return self._copy(device=device)

    def take(self, idx: torch.Tensor) -> "StreamedImages":
        return self._copy(index=self.index[idx.cpu().numpy()])

    def stored(self, positions: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        chunks = [self.index[positions[i : i + batch_size]].tolist() for i in range(0, len(positions), batch_size)]
        return read_batches(self.decode, chunks, self.workers, self.rows, pin=self.device.type == "cuda")

    def batches(self, order, batch_size, augment=None, generator=None):
        m = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)
        for i, u8 in zip(range(0, len(order), batch_size), self.stored(order.cpu().numpy(), batch_size)):
            x = u8.to(self.device, non_blocking=True).float().div_(255).sub_(m).div_(s)
            yield order[i : i + batch_size], crop(x, self.size, augment, generator)

    def head(self, n: int) -> torch.Tensor:
        """The first n images, evaluation crop, normalized; one float tensor filled batch by batch (the only
        full-size copy)."""
        n = min(n, len(self))
        out = torch.empty((n, self.decode.pre.channels, *self.size), device=self.device)
        for idx, x in self.batches(torch.arange(n), 256):
            out[idx[0] : idx[-1] + 1] = x
        return out

    def statistics(self, seed: int, sample: int = 512) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of pixels in [0, 1] (evaluation crop) over a seeded sample of the images."""
        picked = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:sample].sort().values
        total = total_sq = count = 0
        for u8 in self.stored(picked.numpy(), 256):
            x = crop(u8, self.size, None, None).double() / 255
            total, total_sq = total + x.sum((0, 2, 3)), total_sq + (x * x).sum((0, 2, 3))
            count += x[:, 0].numel()
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(0).sqrt() + 1e-6
        return tuple(mean.tolist()), tuple(std.tolist())
