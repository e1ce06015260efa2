"""Augmentation on the training device, a whole batch at a time: a CPU loader cannot feed a GPU at tens of
thousands of images per second, and the data already lives on the device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgedistill.recipe import Augment


def augment(x: torch.Tensor, cfg: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random warp (rotation, zoom, elastic), crop after padding, horizontal flip and cutout of a normalized NCHW
    batch.

    Zero is the mean in normalized units, so `fill: mean` pads with the data's mean colour; `fill: edge` repeats
    the border pixels instead (on digits the mean is grey, and a grey frame is a feature the test set lacks)."""
    n, _, h, w = x.shape
    dev = x.device
    if cfg.warps:
        x = _warp(x, cfg, generator)
    if cfg.crop_padding:
        p = cfg.crop_padding
        padded = F.pad(x, (p, p, p, p), mode="replicate" if cfg.fill == "edge" else "constant")
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


def _warp(x: torch.Tensor, cfg: Augment, generator: torch.Generator) -> torch.Tensor:
    """One bilinear resampling for rotation, zoom and elastic distortion together (each resampling blurs)."""
    n, _, h, w = x.shape
    dev = x.device

    def uniform(*shape):  # in [-1, 1)
        return torch.rand(*shape, device=dev, generator=generator) * 2 - 1

    angle = uniform(n) * math.radians(cfg.rotate)
    shrink = 1.0 / (1.0 + uniform(n) * cfg.scale)  # the grid maps output to input pixels: zoom in = shrink
    cos, sin = torch.cos(angle) * shrink, torch.sin(angle) * shrink
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # n,h,w,2 in [-1, 1], (x, y)
    if cfg.elastic_alpha:
        field = _smooth(uniform(n, 2, h, w), cfg.elastic_sigma) * cfg.elastic_alpha  # pixels
        grid = grid + field.permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h], device=dev)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border" if cfg.fill == "edge" else "zeros",
                         align_corners=False)


def _smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each channel (the smoothing that makes random displacements elastic), zero beyond the
    border. Done as two small matrix products, rows then columns: far faster than a long depthwise convolution."""
    def blur_matrix(size: int) -> torch.Tensor:
        r = torch.arange(size, dtype=field.dtype, device=field.device)
        return torch.exp(-(r[:, None] - r[None, :]) ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))

    return blur_matrix(field.shape[-2]) @ field @ blur_matrix(field.shape[-1])
