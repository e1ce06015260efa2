"""edgedistill.data.sources: npz (plain and encoded) and image-folder readers, on tiny data built here."""

import io

import numpy as np
import pytest
from PIL import Image

from edgedistill.data.sources import ImageArrays, read_image_folder, read_npz
from edgedistill.errors import UserError

RNG = np.random.default_rng(0)


def _pixels(n, h, w, c):
    return RNG.integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _smooth(n, h, w, c):
    """Gradients plus an offset per image: compress well, so JPEG stays close to the source."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (yy * 150 // max(h - 1, 1) + xx * 150 // max(w - 1, 1)) // 2  # 0..150
    imgs = [base[..., None] + 15 * i + 20 * np.arange(c) + 10 for i in range(n)]
    return np.stack(imgs).astype(np.uint8)


def _encode(images, fmt):
    """Concatenated encoded images and their N+1 offsets, the layout of cifar10_jpeg.npz."""
    blobs = []
    for a in images:
        b = io.BytesIO()
        options = {"quality": 95} if fmt == "JPEG" else {}
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(b, fmt, **options)
        blobs.append(b.getvalue())
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def _save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message.startswith("data.path:"), message
    assert "\n" not in message and "Traceback" not in message
    return message


# ------------------------------------------------------------------------------------- plain npz


def test_plain_nhw_grayscale_gets_a_channel_axis_and_int64_labels(tmp_path):
    x = _pixels(6, 5, 7, 1)[..., 0]
    d = read_npz(_save(tmp_path, x_train=x, y_train=np.arange(6, dtype=np.uint8) % 2))
    assert isinstance(d, ImageArrays)
    assert d.x_train.shape == (6, 5, 7, 1) and d.x_train.dtype == np.uint8
    np.testing.assert_array_equal(d.x_train[..., 0], x)
    assert d.y_train.dtype == np.int64 and d.y_train.tolist() == [0, 1, 0, 1, 0, 1]
    assert d.x_test is None and d.y_test is None and d.class_names is None


def test_plain_nhwc_with_test_split(tmp_path):
    x, xt = _pixels(8, 6, 6, 3), _pixels(3, 6, 6, 3)
    d = read_npz(_save(tmp_path, x_train=x, y_train=np.arange(8) % 4, x_test=xt, y_test=np.array([3, 2, 1])))
    np.testing.assert_array_equal(d.x_train, x)
    np.testing.assert_array_equal(d.x_test, xt)
    assert d.y_test.dtype == np.int64 and d.y_test.tolist() == [3, 2, 1]


@pytest.mark.parametrize("channels", [1, 3])
def test_plain_nchw_is_transposed(tmp_path, channels):
    x = _pixels(4, 5, 6, channels)
    d = read_npz(_save(tmp_path, x_train=x.transpose(0, 3, 1, 2), y_train=np.zeros(4, np.int32)))
    assert d.x_train.shape == (4, 5, 6, channels) and d.x_train.flags.c_contiguous
    np.testing.assert_array_equal(d.x_train, x)


def test_plain_rgba_drops_alpha_and_ambiguous_shape_prefers_square_images(tmp_path):
    x = _pixels(2, 4, 4, 4)
    assert read_npz(_save(tmp_path, x_train=x, y_train=[0, 1])).x_train.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(read_npz(_save(tmp_path, x_train=x, y_train=[0, 1])).x_train, x[..., :3])
    # (N, 4, 4, 3): 4x4 RGB (NHWC), not 4x3 with 4 channels; (N, 1, 4, 4): 4x4 grayscale (NCHW)
    assert read_npz(_save(tmp_path, x_train=_pixels(2, 4, 4, 3), y_train=[0, 1])).x_train.shape == (2, 4, 4, 3)
    assert read_npz(_save(tmp_path, x_train=_pixels(2, 1, 4, 4), y_train=[0, 1])).x_train.shape == (2, 4, 4, 1)


def test_plain_float_pixels_are_scaled_and_rounded(tmp_path):
    x = _pixels(5, 4, 4, 3)
    d = read_npz(_save(tmp_path, x_train=x.astype(np.float32) / 255, y_train=np.arange(5),
                       x_test=np.full((1, 4, 4, 3), 0.5, np.float64), y_test=[0]))
    np.testing.assert_array_equal(d.x_train, x)
    assert d.x_train.dtype == np.uint8 and int(d.x_test[0, 0, 0, 0]) == 128  # 127.5 rounds to even


def test_plain_integer_pixels_in_range_and_class_names(tmp_path):
    x = _pixels(3, 2, 2, 1).astype(np.int64)
    d = read_npz(_save(tmp_path, x_train=x, y_train=[0, 2, 1], class_names=np.array(["cat", "dog", "emu"])))
    np.testing.assert_array_equal(d.x_train, x.astype(np.uint8))
    assert d.class_names == ["cat", "dog", "emu"]


# ----------------------------------------------------------------------------------- encoded npz


def test_encoded_png_rgb_round_trips_exactly(tmp_path):
    x, xt = _pixels(7, 6, 5, 3), _pixels(3, 6, 5, 3)
    (buf, off), (tbuf, toff) = _encode(x, "PNG"), _encode(xt, "PNG")
    path = _save(tmp_path, train_jpeg=buf, train_offsets=off, y_train=np.arange(7, dtype=np.uint8) % 3,
                 test_jpeg=tbuf, test_offsets=toff, y_test=np.array([2, 0, 1], np.uint8))
    for workers in (1, 2):  # the thread pool must give the same arrays as the serial path
        d = read_npz(path, workers=workers)
        np.testing.assert_array_equal(d.x_train, x)
        np.testing.assert_array_equal(d.x_test, xt)
        assert d.y_train.dtype == np.int64 and d.y_train.tolist() == [0, 1, 2, 0, 1, 2, 0]
        assert d.y_test.tolist() == [2, 0, 1]


def test_encoded_png_grayscale_round_trips_exactly_with_one_channel(tmp_path):
    x = _pixels(5, 4, 6, 1)
    buf, off = _encode(x, "PNG")
    d = read_npz(_save(tmp_path, train_jpeg=buf, train_offsets=off, y_train=np.arange(5)), workers=2)
    assert d.x_train.shape == (5, 4, 6, 1) and d.x_test is None and d.y_test is None
    np.testing.assert_array_equal(d.x_train, x)


@pytest.mark.parametrize("channels", [1, 3])
def test_encoded_jpeg_decodes_approximately(tmp_path, channels):
    x = _smooth(4, 16, 16, channels)
    buf, off = _encode(x, "JPEG")
    d = read_npz(_save(tmp_path, train_jpeg=buf, train_offsets=off, y_train=np.arange(4)))
    assert d.x_train.shape == (4, 16, 16, channels) and d.x_train.dtype == np.uint8
    assert np.abs(d.x_train.astype(int) - x).mean() < 3


def test_encoded_grayscale_first_then_colour_decodes_everything_as_rgb(tmp_path):
    gray, colour = _pixels(1, 4, 4, 1), _pixels(1, 4, 4, 3)
    (gbuf, goff), (cbuf, _) = _encode(gray, "PNG"), _encode(colour, "PNG")
    buf = np.concatenate([gbuf, cbuf])
    off = np.array([0, len(gbuf), len(buf)], np.int64)
    d = read_npz(_save(tmp_path, train_jpeg=buf, train_offsets=off, y_train=[0, 1]))
    assert d.x_train.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(d.x_train[0], np.repeat(gray[0], 3, axis=-1))
    np.testing.assert_array_equal(d.x_train[1], colour[0])


# ---------------------------------------------------------------------------------- image folder


def _write_images(folder, images, fmt="PNG", suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(folder / f"{i:03d}{suffix}", fmt)


def test_folder_with_train_and_test_split(tmp_path):
    cats, dogs, emus = _pixels(3, 5, 5, 3), _pixels(2, 5, 5, 3), _pixels(2, 5, 5, 3)
    _write_images(tmp_path / "train" / "dog", dogs)
    _write_images(tmp_path / "train" / "cat", cats)
    _write_images(tmp_path / "train" / "emu", emus, "BMP", ".BMP")  # suffixes match case-insensitively
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    _write_images(tmp_path / "test" / "emu", emus[:1])  # a test split may hold a subset of the classes
    d = read_image_folder(tmp_path)
    assert d.class_names == ["cat", "dog", "emu"]
    assert d.x_train.shape == (7, 5, 5, 3) and d.y_train.tolist() == [0, 0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(d.x_train, np.concatenate([cats, dogs, emus]))
    assert d.y_test.dtype == np.int64 and d.y_test.tolist() == [2]
    np.testing.assert_array_equal(d.x_test, emus[:1])


def test_folder_without_split_grayscale(tmp_path):
    a, b = _pixels(2, 3, 4, 1)[..., 0], _pixels(1, 3, 4, 1)[..., 0]
    _write_images(tmp_path / "b", b)
    _write_images(tmp_path / "a", a)
    (tmp_path / "README.txt").write_text("stray files at the top are ignored")
    d = read_image_folder(tmp_path, workers=2)
    assert d.class_names == ["a", "b"] and d.x_test is None and d.y_test is None
    assert d.x_train.shape == (3, 3, 4, 1) and d.y_train.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(d.x_train[..., 0], np.concatenate([a, b]))


# ---------------------------------------------------------------------------------------- errors


def test_npz_file_errors(tmp_path):
    assert "does not exist" in _error(read_npz, tmp_path / "missing.npz")
    assert "is a folder" in _error(read_npz, tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    assert "not an .npz file" in _error(read_npz, tmp_path / "junk.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 a damaged zip archive")
    assert "not a readable .npz" in _error(read_npz, tmp_path / "broken.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert ".npy" in _error(read_npz, tmp_path / "one.npy")
    assert "object dtype" in _error(read_npz, _save(tmp_path, x_train=np.array([{}], dtype=object), y_train=[0]))


@pytest.mark.parametrize("arrays, expected", [
    ({"images": np.zeros((2, 3, 3), np.uint8)}, "neither 'x_train'"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8)}, "no array 'y_train'"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": [0, 1, 1]}, "3 labels but x_train has 2"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": [0, 1], "x_test": np.zeros((1, 3, 3), np.uint8)},
     "has 'x_test' but no 'y_test'"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": [0, 1],
      "x_test": np.zeros((1, 4, 4), np.uint8), "y_test": [0]}, "must match"),
    ({"x_train": np.full((2, 3, 3), 1.5), "y_train": [0, 1]}, "must lie in [0, 1]"),
    ({"x_train": np.full((2, 3, 3), np.nan), "y_train": [0, 1]}, "must lie in [0, 1]"),
    ({"x_train": np.full((2, 3, 3), 300), "y_train": [0, 1]}, "0..255"),
    ({"x_train": np.zeros((2, 5, 5, 5), np.uint8), "y_train": [0, 1]}, "no channel axis"),
    ({"x_train": np.zeros((2, 3), np.uint8), "y_train": [0, 1]}, "expected (N,H,W)"),
    ({"x_train": np.zeros((0, 3, 3), np.uint8), "y_train": np.zeros(0, int)}, "no images"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": [-1, 0]}, "class indices"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": [0.5, 1.0]}, "integer class indices"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": np.eye(2)}, "one-hot"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": [0, 2], "class_names": np.array(["a", "b"])},
     "names only 2"),
    ({"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": [0, 1], "train_jpeg": np.zeros(3, np.uint8)},
     "both 'x_train' and 'train_jpeg'"),
])
def test_plain_npz_errors(tmp_path, arrays, expected):
    message = _error(read_npz, _save(tmp_path, **arrays))
    assert expected in message, message


def _encoded_arrays(n=3, size=(4, 4), fmt="PNG"):
    buf, off = _encode(_pixels(n, *size, 3), fmt)
    return {"train_jpeg": buf, "train_offsets": off, "y_train": np.arange(n)}


def test_encoded_npz_errors(tmp_path):
    a = _encoded_arrays()
    buf, off = a["train_jpeg"], a["train_offsets"]
    cases = [
        ({"train_jpeg": buf, "y_train": [0, 1, 2]}, "no array 'train_offsets'"),
        ({**a, "y_train": [0, 1]}, "2 labels but train_offsets has 3"),
        ({**a, "train_offsets": off[:-1]}, "3 labels but train_offsets has 2"),
        ({**a, "train_offsets": np.append(off[:-1], off[-1] + 10)}, "must lie within"),
        ({**a, "train_offsets": off[[0, 2, 1, 3]]}, "must increase"),
        ({**a, "train_offsets": np.array([0])}, "holds no images"),
        ({**a, "train_jpeg": buf.astype(np.int32)}, "1-D uint8 byte buffer"),
        ({**a, "test_jpeg": buf}, "has 'test_jpeg' but no 'test_offsets'"),
    ]
    for arrays, expected in cases:
        message = _error(read_npz, _save(tmp_path, **arrays))
        assert expected in message, message


def test_encoded_corrupt_image_names_the_image(tmp_path):
    a = _encoded_arrays(4)
    buf, off = a["train_jpeg"].copy(), a["train_offsets"]
    buf[off[2] : off[3]] = 7  # image 2 becomes garbage
    message = _error(read_npz, _save(tmp_path, **{**a, "train_jpeg": buf}), workers=2)
    assert "train image 2" in message and "not a readable image" in message


def test_encoded_truncated_jpeg_is_refused(tmp_path):
    x = _smooth(2, 16, 16, 3)
    buf, off = _encode(x, "JPEG")
    keep = np.concatenate([buf[: off[1]], buf[off[1] : off[1] + (off[2] - off[1]) // 2]])
    path = _save(tmp_path, train_jpeg=keep, train_offsets=np.array([0, off[1], len(keep)]), y_train=[0, 1])
    assert "train image 1" in _error(read_npz, path)


def test_encoded_mixed_sizes_are_refused(tmp_path):
    (b1, o1), (b2, _) = _encode(_pixels(2, 4, 4, 3), "PNG"), _encode(_pixels(1, 5, 4, 3), "PNG")
    buf = np.concatenate([b1, b2])
    path = _save(tmp_path, train_jpeg=buf, train_offsets=np.append(o1, len(buf)), y_train=[0, 1, 2])
    message = _error(read_npz, path)
    assert "train image 2" in message and "share one size" in message


def test_encoded_test_split_must_match_train_size(tmp_path):
    a = _encoded_arrays(2, (4, 4))
    t = _encoded_arrays(1, (6, 6))
    path = _save(tmp_path, **a, test_jpeg=t["train_jpeg"], test_offsets=t["train_offsets"], y_test=[0])
    assert "test image 0" in _error(read_npz, path)


def test_folder_errors(tmp_path):
    assert "does not exist" in _error(read_image_folder, tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    assert "is a file" in _error(read_image_folder, tmp_path / "f.txt")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no class subfolders" in _error(read_image_folder, empty)

    loose = tmp_path / "loose"
    _write_images(loose, _pixels(1, 3, 3, 3))
    assert "one subfolder per class" in _error(read_image_folder, loose)

    no_images = tmp_path / "no_images"
    _write_images(no_images / "a", _pixels(1, 3, 3, 3))
    (no_images / "b").mkdir()
    assert "no_images/b has no images" in _error(read_image_folder, no_images)

    only_test = tmp_path / "only_test"
    _write_images(only_test / "test" / "a", _pixels(1, 3, 3, 3))
    assert "no train/ folder" in _error(read_image_folder, only_test)

    extra_class = tmp_path / "extra_class"
    _write_images(extra_class / "train" / "a", _pixels(1, 3, 3, 3))
    _write_images(extra_class / "test" / "z", _pixels(1, 3, 3, 3))
    assert "the train split lacks" in _error(read_image_folder, extra_class)


def test_folder_corrupt_and_mixed_size_images_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt"
    _write_images(corrupt / "a", _pixels(2, 3, 3, 3))
    (corrupt / "a" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    message = _error(read_image_folder, corrupt)
    assert "002.png" in message and "not a readable image" in message

    mixed = tmp_path / "mixed"
    _write_images(mixed / "a", _pixels(1, 3, 3, 3))
    _write_images(mixed / "b", _pixels(1, 4, 3, 3))
    message = _error(read_image_folder, mixed, workers=2)
    assert "b/000.png" in message and "share one size" in message


def test_sixteen_bit_images_are_refused_not_clipped(tmp_path):
    folder = tmp_path / "deep" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((3, 3), 1000, np.uint16)).save(folder / "0.png")
    assert "16-bit" in _error(read_image_folder, tmp_path / "deep")
