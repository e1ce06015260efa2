"""Read image-classification data from disk into uint8 numpy arrays.

Every reader returns an :class:`ImageArrays`: ``x_*`` are uint8 ``(N, H, W, C)`` with ``C = 1``
(grayscale) or ``3`` (RGB), ``y_*`` are int64 ``(N,)``, and ``x_test``/``y_test`` are None when the
source has no test split. Nothing here normalizes, shuffles or splits; that is the caller's job.

Sources:

* :func:`read_npz` -- an ``.npz`` (loaded with ``allow_pickle=False``) in one of two layouts:

  a. plain arrays ``x_train, y_train[, x_test, y_test]``: images shaped ``(N,H,W)``, ``(N,H,W,C)``
     or ``(N,C,H,W)`` with C in 1/3/4, as uint8 (or integers in 0..255) or floats in [0, 1]
     (converted by ``round(x * 255)``). A 4th (alpha) channel is dropped. When both ``(N,H,W,C)``
     and ``(N,C,H,W)`` would fit (e.g. ``(N,4,4,3)``) the reading with square images wins, else NHWC.
  b. encoded images: ``train_jpeg`` (one uint8 buffer of concatenated JPEG/PNG/BMP files),
     ``train_offsets`` (N+1 integers; image i is ``buf[offsets[i]:offsets[i+1]]``), ``y_train``,
     optionally ``test_jpeg, test_offsets, y_test``. This is the layout of the offline CIFAR-10 copy.

  Either layout may carry an optional 1-D string array ``class_names`` (label i is ``class_names[i]``).
* :func:`read_image_folder` -- ``root/train/<class>/*.{png,jpg,jpeg,bmp}`` plus optionally
  ``root/test/<class>/...``, or, without a ``train/`` folder, ``root/<class>/...`` (no test split).
  Class names (plain ``sorted()`` of the folder names) give the label indices; a test folder may
  hold a subset of the train classes.

Decoding (encoded npz and folders) uses Pillow: the first image fixes the size and the colour mode
(grayscale modes "1"/"L"/"LA" -> C = 1, anything else -> RGB, alpha dropped); every image must
have that size. If a later image turns out to be colour while the first was grayscale, everything
is decoded again as RGB (grayscale images become three equal channels), so colour is never lost.
16-bit and float images (modes "I", "I;16", "F") are refused rather than silently clipped.

Performance: decoding the full offline CIFAR-10 npz (60,000 32x32 JPEGs) takes about 4 s on this
project's 2-core machine (3.6-4.4 s; Pillow 13 + libjpeg-turbo, Python 3.11, ~60 us per image).
For images this small the per-image cost is mostly Pillow's Python-side header parsing, which holds
the GIL; only the libjpeg/zlib call releases it. A second thread therefore does not add a core, it
adds lock contention: with both cores free, 2 threads took 5.9-6.2 s and burned ~8 s of CPU (they
only looked faster while other jobs kept the second core busy). On a separate idle machine pinned
to 2 cores, 2 threads were ~20% slower at 32x32, 1.15x faster at 64x64 and 1.9x faster at 128x128
and 224x224. So the thread pool (one thread per usable core, at most 8, over chunks of images)
starts only for images of at least 64x64 pixels; ``workers=`` overrides that choice. Decode once
and cache the arrays if you need them repeatedly.

Errors: anything a user can cause (missing file or key, mismatched counts, a corrupt image, mixed
sizes, an empty folder, ...) raises :class:`edgedistill.errors.UserError` with one line that starts
with ``data.path:`` and says what to fix; no library exception escapes.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgedistill.errors import UserError

__all__ = ["ImageArrays", "ImageFiles", "read_npz", "read_image_folder", "list_image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;32", "I;32L", "I;32B"})
# Below this many pixels per image, decoding is GIL-bound Python and a second thread only adds lock contention.
_POOL_MIN_PIXELS = 64 * 64


@dataclass
class ImageArrays:
    """Images as uint8 (N, H, W, C), C in {1, 3}; labels as int64 (N,). Test fields are None without a test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str] | None


def _fail(message: str) -> UserError:
    """A one-line UserError under the data.path field (library messages may carry newlines)."""
    return UserError("data.path: " + " ".join(str(message).split()))


def _why(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):  # its text names a BytesIO object's address: no help to anyone
        return "not a PNG/JPEG/BMP file, or its header is damaged"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --------------------------------------------------------------------------------------------- npz


def read_npz(path: str | os.PathLike, *, workers: int | None = None) -> ImageArrays:
    """Read an npz of plain image arrays or of encoded images (see the module docstring).

    ``workers``: decoding threads for encoded images (None: 1 below 64x64 pixels, else the usable cores, max 8)."""
    path = Path(path)
    if not path.exists():
        raise _fail(f"{path} does not exist; point data.path at an .npz file")
    if path.is_dir():
        raise _fail(f"{path} is a folder, not an .npz file (for an image folder use dataset: folder)")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise _fail(f"{path} cannot be read ({_why(e)})") from None
    if magic == b"\x93NUMPY":
        raise _fail(
            f"{path} holds a single array (.npy), not an .npz; save the arrays with numpy.savez(x_train=..., y_train=...)"
        )
    if not magic.startswith(b"PK"):
        raise _fail(f"{path} is not an .npz file (not a zip archive); save the arrays with numpy.savez")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # OSError, ValueError, BadZipFile, ...: all mean "not a readable npz"
        raise _fail(f"{path} is not a readable .npz file ({_why(e)}); save it again with numpy.savez") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise _fail(f"{path} is not an .npz file; save the arrays with numpy.savez")
    with z:
        keys = set(z.files)

        def get(key: str) -> np.ndarray:
            try:
                return z[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise _fail(
                    f"{path}: array '{key}' cannot be read ({_why(e)}); "
                    "save it again with numpy.savez, as numeric or string arrays (no object dtype)"
                ) from None

        has = ", ".join(sorted(keys)) or "nothing"
        if "train_jpeg" in keys and "x_train" in keys:
            raise _fail(f"{path} has both 'x_train' and 'train_jpeg'; keep one layout (plain arrays or encoded images)")
        if "train_jpeg" in keys:
            arrays = _read_encoded(path, keys, get, workers)
        elif "x_train" in keys:
            arrays = _read_plain(path, keys, get)
        else:
            raise _fail(
                f"{path} has neither 'x_train' (plain arrays) nor 'train_jpeg' (encoded images); it has: {has}"
            )
        if "class_names" in keys:
            arrays.class_names = _class_names(path, get("class_names"), arrays)
    return arrays


def _need(path: Path, keys: set[str], wanted: tuple[str, ...]) -> None:
    missing = [k for k in wanted if k not in keys]
    if missing:
        raise _fail(f"{path} has no array '{missing[0]}' (has: {', '.join(sorted(keys))}); add it")


def _optional_split(path: Path, keys: set[str], group: tuple[str, ...]) -> bool:
    present = [k for k in group if k in keys]
    if present and len(present) != len(group):
        absent = [k for k in group if k not in keys]
        raise _fail(f"{path} has '{present[0]}' but no '{absent[0]}'; a test split needs all of {', '.join(group)}")
    return bool(present)


def _read_plain(path: Path, keys: set[str], get) -> ImageArrays:
    _need(path, keys, ("x_train", "y_train"))
    x_tr = _as_nhwc_uint8(get("x_train"), f"{path} x_train")
    y_tr = _as_labels(get("y_train"), f"{path} y_train", len(x_tr), "x_train")
    x_te = y_te = None
    if _optional_split(path, keys, ("x_test", "y_test")):
        x_te = _as_nhwc_uint8(get("x_test"), f"{path} x_test")
        y_te = _as_labels(get("y_test"), f"{path} y_test", len(x_te), "x_test")
        if x_te.shape[1:] != x_tr.shape[1:]:
            raise _fail(
                f"{path}: train images are HxWxC {_hwc(x_tr.shape)} but test images {_hwc(x_te.shape)}; they must match"
            )
    return ImageArrays(x_tr, y_tr, x_te, y_te, None)


def _hwc(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape[1:])


def _as_nhwc_uint8(x: np.ndarray, field: str) -> np.ndarray:
    """(N,H,W) / (N,H,W,C) / (N,C,H,W), C in 1/3/4, uint8, int 0..255 or float [0,1] -> uint8 (N,H,W,C), C in 1/3."""
    shapes = "(N,H,W), (N,H,W,C) or (N,C,H,W) with C = 1, 3 or 4"
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4:
        last, first = x.shape[3] in (1, 3, 4), x.shape[1] in (1, 3, 4)
        if first and (not last or (x.shape[2] == x.shape[3] and x.shape[1] != x.shape[2])):
            x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        elif not last:
            raise _fail(f"{field}: shape {x.shape} has no channel axis of size 1, 3 or 4; expected {shapes}")
    else:
        raise _fail(f"{field}: images shaped {x.shape}; expected {shapes}")
    if x.shape[0] == 0:
        raise _fail(f"{field}: holds no images; add some")
    if 0 in x.shape[1:3]:
        raise _fail(f"{field}: images shaped {x.shape} are empty; give H and W of at least 1")
    if x.shape[3] == 4:
        x = x[..., :3]  # RGBA -> RGB, the same as PIL's convert("RGB")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise _fail(f"{field}: integer pixels must lie in 0..255 (got {lo}..{hi}); pass uint8 pixels")
        return np.ascontiguousarray(x, dtype=np.uint8)
    if x.dtype.kind == "f":
        x = x.astype(np.float32) if x.dtype.itemsize < 4 else x
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise _fail(
                f"{field}: float pixels must lie in [0, 1] (got {lo:.4g}..{hi:.4g}); scale them to [0, 1] or pass uint8 pixels"
            )
        return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
    raise _fail(f"{field}: pixels have dtype {x.dtype}; pass uint8 (0..255) or float (0..1) pixels")


def _as_labels(y: np.ndarray, field: str, count: int, images: str) -> np.ndarray:
    """Labels as int64 (N,) class indices >= 0; (N, 1) is accepted."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise _fail(f"{field}: labels shaped {y.shape}; expected class indices shaped (N,), not one-hot")
    if len(y) != count:
        raise _fail(f"{field}: {len(y)} labels but {images} has {count} images; they must match in count")
    if y.dtype.kind in "iu":
        out = y.astype(np.int64)
    elif y.dtype.kind == "f" and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y))):
        out = y.astype(np.int64)
    elif y.dtype.kind == "b":
        out = y.astype(np.int64)
    else:
        raise _fail(f"{field}: labels have dtype {y.dtype}; give integer class indices 0..K-1")
    if len(out) and out.min() < 0:
        raise _fail(f"{field}: labels must be class indices 0..K-1 (found {int(out.min())})")
    return out


def _class_names(path: Path, names: np.ndarray, arrays: ImageArrays) -> list[str]:
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise _fail(f"{path}: 'class_names' must be a 1-D array of strings (got {names.dtype} {names.shape})")
    out = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    top = max(int(y.max()) for y in (arrays.y_train, arrays.y_test) if y is not None and len(y))
    if top >= len(out):
        raise _fail(f"{path}: labels go up to {top} but 'class_names' names only {len(out)} classes; name them all")
    return out


def _read_encoded(path: Path, keys: set[str], get, workers: int | None) -> ImageArrays:
    _need(path, keys, ("train_jpeg", "train_offsets", "y_train"))
    splits = [_encoded_split(path, "train", get("train_jpeg"), get("train_offsets"))]
    has_test = _optional_split(path, keys, ("test_jpeg", "test_offsets", "y_test"))
    if has_test:
        splits.append(_encoded_split(path, "test", get("test_jpeg"), get("test_offsets")))
    y_tr = _as_labels(get("y_train"), f"{path} y_train", splits[0].count, "train_offsets")
    y_te = _as_labels(get("y_test"), f"{path} y_test", splits[1].count, "test_offsets") if has_test else None
    xs = _decode(splits, workers)
    return ImageArrays(xs[0], y_tr, xs[1] if has_test else None, y_te, None)


@dataclass
class _Source:
    """N encoded images: read(i) gives image i's bytes, name(i) says which image it is in an error."""

    count: int
    read: Callable[[int], bytes | memoryview]
    name: Callable[[int], str]
    first: str  # how the size/mode-setting first image is called in messages


def _encoded_split(path: Path, split: str, buf: np.ndarray, offsets: np.ndarray) -> _Source:
    bkey, okey = f"{split}_jpeg", f"{split}_offsets"
    if buf.ndim != 1 or buf.dtype != np.uint8:
        raise _fail(f"{path} {bkey}: must be one 1-D uint8 byte buffer (got {buf.dtype} {buf.shape})")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise _fail(f"{path} {okey}: must be a 1-D integer array of N+1 offsets (got {offsets.dtype} {offsets.shape})")
    if len(offsets) < 2:
        raise _fail(f"{path} {okey}: has {len(offsets)} entries, so {bkey} holds no images; give N+1 offsets for N images")
    offs = offsets.astype(np.int64)
    if offs[0] < 0 or offs[-1] > len(buf):
        raise _fail(
            f"{path} {okey}: offsets run {int(offs[0])}..{int(offs[-1])} but {bkey} has {len(buf)} bytes; "
            f"they must lie within it"
        )
    steps = np.diff(offs)
    if steps.min() <= 0:
        i = int(np.argmax(steps <= 0))
        raise _fail(f"{path} {okey}: offsets must increase (entries {i} and {i + 1} are {int(offs[i])}, {int(offs[i + 1])})")
    view, bounds = memoryview(buf), offs.tolist()
    return _Source(
        count=len(bounds) - 1,
        read=lambda i: view[bounds[i] : bounds[i + 1]],
        name=lambda i: f"{path} {split} image {i} (bytes {bounds[i]}..{bounds[i + 1]} of {bkey})",
        first=f"{split} image 0",
    )


# ------------------------------------------------------------------------------------------ folder


def read_image_folder(root: str | os.PathLike, *, workers: int | None = None) -> ImageArrays:
    """Read ``root/train/<class>/*`` (+ optional ``root/test/<class>/*``) or ``root/<class>/*``.

    ``workers``: decoding threads, as for :func:`read_npz`.
    Class names are the sorted folder names of the train split; label i is ``class_names[i]``."""
    folder = list_image_folder(root)
    test_files = folder.test_files
    splits = [_file_source(folder.train_files)] + ([_file_source(test_files)] if test_files is not None else [])
    xs = _decode(splits, workers)
    return ImageArrays(xs[0], folder.y_train, xs[1] if test_files is not None else None, folder.y_test,
                       folder.class_names)


@dataclass
class ImageFiles:
    """An image folder's files and labels, not yet decoded. Test fields are None without a test split."""

    train_files: list[Path]
    y_train: np.ndarray
    test_files: list[Path] | None
    y_test: np.ndarray | None
    class_names: list[str]


def list_image_folder(root: str | os.PathLike) -> ImageFiles:
    """The files of ``root/train/<class>/*`` (+ optional ``root/test/<class>/*``) or ``root/<class>/*``."""
    root = Path(root)
    if not root.exists():
        raise _fail(f"{root} does not exist; point data.path at an image folder")
    if not root.is_dir():
        raise _fail(f"{root} is a file, not a folder of <class>/ subfolders (for an .npz use dataset: npz; "
                    "a list of images is a .csv or .jsonl file)")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir():
        class_names = _class_dirs(train_dir)
        train_files, y_tr = _list_images(train_dir, class_names, class_names)
        test_files, y_te = None, None
        if test_dir.is_dir():
            test_classes = _class_dirs(test_dir)
            unknown = [c for c in test_classes if c not in class_names]
            if unknown:
                raise _fail(
                    f"{test_dir / unknown[0]} is a class the train split lacks; add {train_dir / unknown[0]} or remove it"
                )
            test_files, y_te = _list_images(test_dir, test_classes, class_names)
    else:
        if test_dir.is_dir():
            raise _fail(f"{root} has a test/ folder but no train/ folder; add {train_dir}/<class>/ images")
        class_names = _class_dirs(root)
        train_files, y_tr = _list_images(root, class_names, class_names)
        test_files, y_te = None, None
    return ImageFiles(train_files, y_tr, test_files, y_te, class_names)


def _class_dirs(folder: Path) -> list[str]:
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise _fail(f"{folder} cannot be listed ({_why(e)})") from None
    if not names:
        loose = any(_is_image(p) for p in folder.iterdir())
        hint = " (its images must go into one subfolder per class)" if loose else ""
        raise _fail(f"{folder} has no class subfolders{hint}; expected {folder}/<class>/*.png|jpg|jpeg|bmp")
    return names


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")


def _list_images(folder: Path, classes: list[str], all_classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for name in classes:
        d = folder / name
        try:
            found = sorted(p for p in d.iterdir() if _is_image(p))
        except OSError as e:
            raise _fail(f"{d} cannot be listed ({_why(e)})") from None
        if not found:
            raise _fail(f"{d} has no images (.png, .jpg, .jpeg, .bmp); add some or remove the folder")
        files += found
        labels += [all_classes.index(name)] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _file_source(files: list[Path]) -> _Source:
    return _Source(
        count=len(files), read=lambda i: files[i].read_bytes(), name=lambda i: str(files[i]), first=str(files[0])
    )


# ---------------------------------------------------------------------------------------- decoding


class _NeedsColor(Exception):
    """A colour image turned up while decoding as grayscale."""


class _Bad(Exception):
    """One image cannot be used; the message says why."""


def _open(data: bytes | memoryview) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Exception as e:  # UnidentifiedImageError, OSError, DecompressionBombError, SyntaxError, ...
        raise _Bad(f"is not a readable image ({_why(e)}); replace or remove it") from None


def _decode_one(data: bytes | memoryview, mode: str, size: tuple[int, int], first: str) -> np.ndarray:
    im = _open(data)
    if im.mode in _WIDE_MODES:
        raise _Bad(f"has 16-bit/float pixels (mode {im.mode}); save it as 8-bit")
    if im.size != size:
        raise _Bad(
            f"is {im.size[0]}x{im.size[1]} (WxH) but {first} is {size[0]}x{size[1]}; "
            "all images must share one size (resize them)"
        )
    if mode == "L" and im.mode not in _GRAY_MODES:
        raise _NeedsColor
    try:
        if im.mode == mode:
            im.load()
        else:
            im = im.convert(mode)
        return np.asarray(im)
    except Exception as e:  # truncated / corrupt data surfaces only when the pixels are decoded
        raise _Bad(f"is not a readable image ({_why(e)}); replace or remove it") from None


def _probe(src: _Source) -> tuple[str, tuple[int, int]]:
    """Mode ("L" or "RGB") and size from the first image."""
    try:
        data = src.read(0)
    except OSError as e:
        raise _fail(f"{src.name(0)} cannot be read ({_why(e)})") from None
    try:
        im = _open(data)
        if im.mode in _WIDE_MODES:
            raise _Bad(f"has 16-bit/float pixels (mode {im.mode}); save it as 8-bit")
    except _Bad as e:
        raise _fail(f"{src.name(0)} {e}") from None
    return ("L" if im.mode in _GRAY_MODES else "RGB"), im.size


def _decode(sources: list[_Source], workers: int | None) -> list[np.ndarray]:
    """Decode every image of every source into uint8 (N, H, W, C) arrays of one shared size and mode."""
    mode, size = _probe(sources[0])
    first = f"the first image ({sources[0].first})"
    out = _decode_as(sources, mode, size, first, workers)
    if out is None:  # grayscale first image, colour later: decode everything again as RGB
        out = _decode_as(sources, "RGB", size, first, workers)
        assert out is not None
    return out


def _usable_cores() -> int:
    """Cores this process may run on (cpu_count ignores taskset/cgroup affinity), at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _decode_as(
    sources: list[_Source], mode: str, size: tuple[int, int], first: str, workers: int | None
) -> list[np.ndarray] | None:
    w, h = size
    channels = 1 if mode == "L" else 3
    try:
        outs = [np.empty((s.count, h, w, channels), dtype=np.uint8) for s in sources]
    except MemoryError:
        gb = sum(s.count for s in sources) * h * w * channels / 1e9
        raise _fail(
            f"{sources[0].first}: the decoded images need {gb:.1f} GB, more than can be allocated; "
            "use fewer or smaller images"
        ) from None

    def run(job: tuple[int, int, int]) -> tuple[int, int, str] | str | None:
        """Decode images a..b of source k; stop at the first problem and return it."""
        k, a, b = job
        src, dst = sources[k], outs[k]
        view = dst[..., 0] if channels == 1 else dst
        for i in range(a, b):
            try:
                view[i] = _decode_one(src.read(i), mode, size, first)
            except _NeedsColor:
                return "color"
            except _Bad as e:
                return (k, i, str(e))
            except OSError as e:  # reading the file itself failed
                return (k, i, f"cannot be read ({_why(e)})")
        return None

    total = sum(s.count for s in sources)
    if workers is None:
        workers = _usable_cores() if w * h >= _POOL_MIN_PIXELS else 1
    workers = max(1, min(workers, total))
    chunk = max(1, -(-total // (workers * 8))) if workers > 1 else total
    jobs = [(k, a, min(a + chunk, s.count)) for k, s in enumerate(sources) for a in range(0, s.count, chunk)]
    if workers == 1:
        results = [run(j) for j in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgedistill-decode") as pool:
            results = list(pool.map(run, jobs))
    if "color" in results:
        return None
    problems = [r for r in results if isinstance(r, tuple)]
    if problems:
        k, i, why = min(problems)  # the earliest bad image, whatever order the threads finished in
        raise _fail(f"{sources[k].name(i)} {why}")
    return outs
