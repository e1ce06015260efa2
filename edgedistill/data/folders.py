"""Image folders and lists, and npz images a model wants resized: which photos, which labels, and how they reach
the model. The training split streams from disk (edgedistill.data.streaming); the held-out split is decoded
once into memory, normalized float32 at the model's size, because every exporter, runtime and parity check
reads it as one tensor: N x C x H x W x 4 bytes (500 images at 224 px: 301 MB).

How photos become model inputs, in order of precedence: the teacher family's Preprocess (at data.image_size
when one is given); data.image_size (shorter side resized to it, then center-cropped; mean/std from
data.normalization or a sample of the training split); else the images' own size when they all share one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgedistill.data.image_lists import read_list, scan
from edgedistill.data.preprocess import Preprocess
from edgedistill.data.sources import _usable_cores, list_image_folder
from edgedistill.data.streaming import ArrayImages, Decode, FileImages, StreamedImages
from edgedistill.errors import UserError

IN_MEMORY_BYTES = 1 << 30  # a folder of one image size whose float32 copy fits this stays in memory, as ever


def list_files(cfg):
    """(train files, y_train, test files or None, y_test or None, the data's class names, fixed): `fixed`
    when the names are final (a list's labels were numbered against data.labels already)."""
    if not cfg.listed:
        f = list_image_folder(cfg.path)
        return f.train_files, f.y_train, f.test_files, f.y_test, f.class_names, False
    from edgedistill.data.text import label_indices

    train, labels = read_list(cfg.path, "data.path")
    test, test_labels = read_list(cfg.test, "data.test") if cfg.test is not None else (None, [])
    y_tr, y_te, names = label_indices(labels, test_labels, cfg.labels)
    return train, y_tr, test, (y_te if test is not None else None), names, True


def geometry(cfg, preprocess: Preprocess | None, files: list[Path]) -> Preprocess | None:
    """The Preprocess to stream with, or None: a folder of small images of one size, read into memory."""
    if preprocess is not None:
        return preprocess
    sizes, gray = scan(files, "data.path")
    channels = 1 if gray else 3
    if cfg.image_size is not None:
        return Preprocess(size=tuple(cfg.image_size), crop_pct=1.0, mean=(), std=(), channels=channels)
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3]) + (", ..." if len(sizes) > 3 else "")
        raise UserError(f"data.image_size: the images have {len(sizes)} sizes (WxH {shown}); set data.image_size "
                        "(e.g. 224) to resize them to one")
    (w, h), = sizes
    if len(files) * channels * h * w * 4 <= IN_MEMORY_BYTES and not cfg.listed:
        return None
    return Preprocess(size=(h, w), crop_pct=1.0, mean=(), std=(), channels=channels)


def streamed(cfg, pre: Preprocess, images, test_images, seed: int):
    """(the streamed training split, the normalized held-out tensor, mean, std)."""
    workers = _usable_cores() if cfg.workers is None else cfg.workers
    train = StreamedImages(Decode(images, pre), (), (), workers, rows=_cached(cfg, pre, images, workers))
    if cfg.normalization is not None:
        mean, std = tuple(cfg.normalization.mean), tuple(cfg.normalization.std)
        if len(mean) != pre.channels:
            raise UserError(f"data.normalization: has {len(mean)} channel(s) but the images have {pre.channels}; "
                            "give one mean/std per channel")
    elif pre.mean:
        mean, std = pre.mean, pre.std
    else:
        mean, std = train.statistics(seed)
    train = train._copy(mean=mean, std=std)
    test = StreamedImages(Decode(test_images, pre), mean, std, workers,
                          rows=_cached(cfg, pre, test_images, workers))
    return train, test.head(len(test)), mean, std


def _cached(cfg, pre: Preprocess, images, workers: int):
    """The cache's rows for these photos (written on a miss), or None without data.cache."""
    from edgedistill.data import image_cache
    from edgedistill.data.streaming import read_batches

    if not cfg.cache or not isinstance(images, FileImages):
        return None
    folder = image_cache.default_dir() if cfg.cache is True else Path(cfg.cache)
    pixels = replace(pre, mean=(), std=())  # normalization is applied later; it does not change the pixels
    path = image_cache.path_for(folder, images.files, pixels)
    shape = (len(images), pre.channels, *pre.resize)
    if not path.exists():
        order = list(range(len(images)))
        chunks = [order[i : i + 64] for i in range(0, len(order), 64)]
        image_cache.build(path, shape, read_batches(Decode(images, pre), chunks, workers))
    return image_cache.Rows(path, shape)


def array_images(x_tr: np.ndarray, x_te: np.ndarray):
    """float32 NCHW in [0, 1] (edgedistill.data._load_arrays) as photos to resize."""
    def u8(x):
        return np.ascontiguousarray((x * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))

    return ArrayImages(u8(x_tr), "train"), ArrayImages(u8(x_te), "test")

