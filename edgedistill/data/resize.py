"""One photo of any size to the stored uint8 image a Preprocess asks for.

The evaluation transform is timm's: scale the shorter side to size / crop_pct (Preprocess.resize) with the
given interpolation, then center-crop to `size`. What is stored is the larger `resize` window around that
crop, placed so that center-cropping it to `size` later gives exactly the evaluation crop (pixel for pixel, with
torchvision's rounding); random resized crops for training are taken from the same stored window."""

from __future__ import annotations

import numpy as np
from PIL import Image

from edgedistill.data.preprocess import Preprocess
from edgedistill.data.sources import _GRAY_MODES, _WIDE_MODES

FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC}


class BadImage(Exception):
    """This image cannot be used; the message says why."""


def resized_size(width: int, height: int, target: tuple[int, int]) -> tuple[int, int]:
    """(W, H) after scaling so that the image covers target (H, W), keeping its aspect: for a square target the
    shorter side becomes the target's and the longer is rounded down, as torchvision's Resize(int)."""
    th, tw = target
    if th == tw:
        if width <= height:
            return th, max(th, int(th * height / width))
        return max(th, int(th * width / height)), th
    scale = max(th / height, tw / width)
    return max(tw, round(width * scale)), max(th, round(height * scale))


def _center(full: int, crop: int) -> int:
    return int(round((full - crop) / 2.0))  # torchvision's CenterCrop


def stored(im: Image.Image, pre: Preprocess) -> np.ndarray:
    """uint8 (C, H, W) at pre.resize: the window of the resized photo that holds its evaluation crop at the
    center."""
    if im.mode in _WIDE_MODES:
        raise BadImage(f"has 16-bit/float pixels (mode {im.mode}); save it as 8-bit")
    mode = "L" if pre.channels == 1 else "RGB"
    if im.mode != mode:
        if mode == "L" and im.mode not in _GRAY_MODES:
            im = im.convert("RGB")  # colour to gray by luminance, as PIL's own RGB -> L
        im = im.convert(mode)
    (rh, rw), (th, tw) = pre.resize, pre.size
    width, height = resized_size(im.width, im.height, (rh, rw))
    if (width, height) != im.size:
        im = im.resize((width, height), FILTERS[pre.interpolation])
    top = min(max(_center(height, th) - _center(rh, th), 0), height - rh)
    left = min(max(_center(width, tw) - _center(rw, tw), 0), width - rw)
    x = np.array(im.crop((left, top, left + rw, top + rh)))  # writable, as torch wants
    return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
