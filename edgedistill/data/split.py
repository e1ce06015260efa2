"""The training split as every stage reads it: its length, its first examples (calibration, example inputs) and
batches in a given order. An in-memory tensor (digits, npz, text, a data-free transfer set) and a folder of
images decoded as it goes (edgedistill.data.streaming) both offer it, so the pipeline has one way to read
training data."""

from __future__ import annotations

from typing import Iterator, Protocol

import torch

from edgedistill.data.augment import crop
from edgedistill.recipe import Augment


class TrainSplit(Protocol):
    device: torch.device
    images: bool  # batches are NCHW images (channels_last applies)

    def __len__(self) -> int: ...

    def head(self, n: int) -> torch.Tensor:
        """The first n examples as the model takes them (evaluation transform), on the split's device."""

    def batches(self, order: torch.Tensor, batch_size: int, augment: Augment | None = None,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(idx, x) for consecutive chunks of `order` (indices into the split), x cropped to the model's size
        (randomly when augment asks for random_resized_crop, drawing from `generator`)."""

    def take(self, idx: torch.Tensor):
        """The examples at idx, as the same kind of split."""


class TensorSplit:
    """A split already in memory as model inputs: batches are index lookups."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.device = x.device
        self.images = x.dim() == 4

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> torch.Tensor:
        return self.x[:n]

    def batches(self, order, batch_size, augment=None, generator=None):
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = self.x[idx]
            yield idx, crop(x, x.shape[-2:], augment, generator) if x.dim() == 4 else x

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx]


def split_of(x) -> TrainSplit:
    """A DataBundle's x_train (a tensor or a streamed split) as a TrainSplit."""
    return TensorSplit(x) if isinstance(x, torch.Tensor) else x
