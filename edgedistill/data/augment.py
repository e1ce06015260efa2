"""Augmentation on the training device, a whole batch at a time: a CPU loader cannot feed a GPU at tens of
thousands of images per second, and the data already lives on the device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgedistill.recipe import Augment


def crop(x: torch.Tensor, size, cfg: Augment | None, generator: torch.Generator | None) -> torch.Tensor:
    """A batch cropped to `size` (H, W): a random resized crop when cfg asks for one, else the center (the
    evaluation crop of a stored image larger than the model's input; nothing when it already fits)."""
    size = tuple(int(s) for s in size)
    if cfg is not None and cfg.random_resized_crop and generator is not None:
        return random_resized_crop(x, size, cfg.random_resized_crop, generator)
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    top, left = int(round((h - size[0]) / 2.0)), int(round((w - size[1]) / 2.0))  # torchvision's CenterCrop
    return x[..., top : top + size[0], left : left + size[1]]


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], min_scale: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Inception-style crops, one per image: a share in [min_scale, 1] of the area with aspect 3/4..4/3, resized
    bilinearly to `size`. A box that would not fit is clamped to the image (timm retries up to 10 times, then
    falls back to the center; one vectorised draw is what a batch on the device affords)."""
    n, _, h, w = x.shape
    dev = x.device
    area = (min_scale + (1 - min_scale) * torch.rand(n, device=dev, generator=generator)) * (h * w)
    log_ratio = (torch.rand(n, device=dev, generator=generator) * 2 - 1) * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    bw = torch.sqrt(area * ratio).clamp(1, w)
    bh = torch.sqrt(area / ratio).clamp(1, h)
    x0 = torch.rand(n, device=dev, generator=generator) * (w - bw)
    y0 = torch.rand(n, device=dev, generator=generator) * (h - bh)
    # output pixel edges [-1, 1] (align_corners=False) map onto the box's edges in the input
    zero = torch.zeros_like(bw)
    theta = torch.stack([torch.stack([bw / w, zero, (2 * x0 + bw) / w - 1], 1),
                         torch.stack([zero, bh / h, (2 * y0 + bh) / h - 1], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), [n, x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(x: torch.Tensor, cfg: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random warp (rotation, zoom, elastic), crop after padding, horizontal flip and cutout of a normalized NCHW
    batch
    (random_resized_crop is done before, by the split's batches: see `crop`).

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
