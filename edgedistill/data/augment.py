"""Augmentation on the training device, a whole batch at a time: a CPU loader cannot feed a GPU at tens of
thousands of images per second, and the data already lives on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.recipe import Augment


def augment(x: torch.Tensor, cfg: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random crop (after zero padding), horizontal flip and cutout of a normalized NCHW batch.

    Zero is the mean in normalized units, so padding and cutout fill with the data's mean colour."""
    n, _, h, w = x.shape
    dev = x.device
    if cfg.crop_padding:
        p = cfg.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
        rows = (torch.arange(h, device=dev) + dy)[:, None, :, None]  # n,1,h,1
        cols = (torch.arange(w, device=dev) + dx)[:, None, None, :]  # n,1,1,w
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if cfg.flip:
        flip = torch.rand(n, device=dev, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if cfg.cutout:
        s = cfg.cutout
        cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=generator)
        cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=generator)
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        hole = ((ys - cy).abs() <= s // 2) & ((xs - cx).abs() <= s // 2)
        x = x.masked_fill(hole[:, None], 0.0)
    return x
