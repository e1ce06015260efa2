"""Photos of any size streamed from a folder or a .csv/.jsonl list: the evaluation crop, normalization, seeded
batches and augmentation, the cache, the error messages, and a whole run on such a folder."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.data import image_cache, load_data
from edgedistill.data.preprocess import Preprocess
from edgedistill.data.sources import list_image_folder
from edgedistill.data.split import split_of
from edgedistill.data.streaming import StreamedImages
from edgedistill.errors import UserError
from edgedistill.recipe import Augment, DataConfig, DistillStage

SIZES = [(31, 47), (50, 22), (40, 40), (23, 36), (64, 33), (29, 29)]  # (W, H): portrait, landscape, square


def _photo(path, size, seed, gray=False):
    rng = np.random.default_rng(seed)
    w, h = size
    # smooth content, so a JPEG round trip stays close and bicubic/bilinear differ measurably
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 5 + seed * 17) % 256, (yy * 7 + seed * 29) % 256, ((xx + yy) * 3) % 256], -1)
    im = Image.fromarray((base + rng.integers(0, 20, base.shape)).clip(0, 255).astype(np.uint8))
    (im.convert("L") if gray else im).save(path, quality=95)


def _folder(root, per_class=6, test=True):
    k = 0
    for split, n in (("train", per_class), ("test", 3)) if test else (("train", per_class),):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                _photo(root / split / c / f"{i}.{'jpg' if k % 2 else 'png'}", SIZES[k % len(SIZES)], k, gray=k % 3 == 0)
                k += 1
    return root


def _hand_crop(path, size, crop_pct, interpolation):
    """timm's evaluation transform written out: shorter side to int(size / crop_pct), center crop to size."""
    im = Image.open(path).convert("RGB")
    s = int(size / crop_pct)
    w, h = im.size
    nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    im = im.resize((nw, nh), interpolation)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


def _pixels(x, pre):
    """Normalized floats back to uint8 pixels."""
    m, s = torch.tensor(pre.mean).view(-1, 1, 1), torch.tensor(pre.std).view(-1, 1, 1)
    return ((x.cpu() * s + m) * 255).round().to(torch.uint8).numpy()


PRE = Preprocess(size=(20, 20), crop_pct=0.8, interpolation="bicubic", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def test_mixed_sizes_without_a_size_name_data_image_size(tmp_path):
    root = _folder(tmp_path / "photos")
    with pytest.raises(UserError, match=r"^data\.image_size: the images have 6 sizes \(WxH .*\); set data\.image_size"):
        load_data(DataConfig(dataset="folder", path=root), 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_crop_is_timms_pixel_for_pixel(tmp_path, workers):
    root = _folder(tmp_path / "photos")
    data = load_data(DataConfig(dataset="folder", path=root, workers=workers), 0, preprocess=PRE)
    files = list_image_folder(root)
    assert isinstance(data.x_train, StreamedImages) and data.x_test.dtype == torch.float32
    assert tuple(data.x_test.shape) == (6, 3, 20, 20) and data.spec.input_shape == (3, 20, 20)
    assert data.spec.mean == PRE.mean and data.spec.std == PRE.std and data.spec.labels == ("cat", "dog")
    for x, f in zip(data.x_test, files.test_files):
        np.testing.assert_array_equal(_pixels(x, PRE), _hand_crop(f, 20, 0.8, Image.Resampling.BICUBIC))
    # training without augmentation sees the same crop, from its larger stored window (25 x 25)
    train = split_of(data.x_train)
    for x, f in zip(train.head(12), files.train_files):
        np.testing.assert_array_equal(_pixels(x, PRE), _hand_crop(f, 20, 0.8, Image.Resampling.BICUBIC))
    bilinear = _hand_crop(files.test_files[1], 20, 0.8, Image.Resampling.BILINEAR)
    assert np.abs(bilinear.astype(int) - _pixels(data.x_test[1], PRE)).max() > 0  # the interpolation is honoured


def test_image_size_normalizes_with_the_training_statistics(tmp_path):
    root = _folder(tmp_path / "photos")
    data = load_data(DataConfig(dataset="folder", path=root, image_size=[12, 16], workers=0), 0)
    assert data.spec.input_shape == (3, 12, 16) and tuple(data.x_test.shape) == (6, 3, 12, 16)
    x = split_of(data.x_train).head(100)
    assert x.shape == (12, 3, 12, 16)
    # mean/std come from (a sample of up to 512 of) the training images: here all of them
    np.testing.assert_allclose(x.mean((0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x.std((0, 2, 3), unbiased=False).numpy(), 1, atol=1e-4)
    given = load_data(DataConfig(dataset="folder", path=root, image_size=12, workers=0,
                                 normalization={"mean": [0.5] * 3, "std": [0.5] * 3}), 0, preprocess=None)
    assert given.spec.mean == (0.5, 0.5, 0.5) and given.spec.input_shape == (3, 12, 12)
    assert float(given.x_test.min()) >= -1 and float(given.x_test.max()) <= 1


def test_data_normalization_overrides_the_families(tmp_path):
    root = _folder(tmp_path / "photos")
    data = load_data(DataConfig(dataset="folder", path=root, workers=0,
                                normalization={"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}), 0, preprocess=PRE)
    assert data.spec.mean == (0.1, 0.2, 0.3) and data.spec.std == (1.0, 1.0, 1.0)


def test_a_grayscale_folder_gives_one_channel_and_small_uniform_folders_stay_in_memory(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "g" / c).mkdir(parents=True)
        for i, size in enumerate([(30, 20), (20, 30), (25, 25)] * 2):
            _photo(tmp_path / "g" / c / f"{i}.png", size, i, gray=True)
    data = load_data(DataConfig(dataset="folder", path=tmp_path / "g", image_size=10, workers=0, test_fraction=0.34), 0)
    assert data.spec.input_shape == (1, 10, 10) and len(data.x_test) + len(split_of(data.x_train)) == 12
    for c in ("a", "b"):
        (tmp_path / "u" / c).mkdir(parents=True)
        for i in range(4):
            _photo(tmp_path / "u" / c / f"{i}.png", (6, 5), i)
    assert isinstance(load_data(DataConfig(dataset="folder", path=tmp_path / "u"), 0).x_train, torch.Tensor)


def test_seeded_order_and_augmentation_repeat_exactly(tmp_path):
    root = _folder(tmp_path / "photos")
    data = load_data(DataConfig(dataset="folder", path=root, workers=2), 0, preprocess=PRE)
    train, aug = split_of(data.x_train), Augment(random_resized_crop=0.3, flip=True)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(train), generator=g)
        return [(idx, x) for idx, x in train.batches(order, 5, aug, g)]

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert [len(i) for i, _ in a] == [5, 5, 2] and all(x.shape[1:] == (3, 20, 20) for _, x in a)
    assert all(torch.equal(i, j) and torch.equal(x, y) for (i, x), (j, y) in zip(a, b))
    assert not torch.equal(torch.cat([x for _, x in a]), torch.cat([x for _, x in c]))
    # a random resized crop is not the evaluation crop; the same images in the same order without it are
    plain = torch.cat([x for _, x in train.batches(torch.cat([i for i, _ in a]), 5)])
    assert not torch.allclose(torch.cat([x for _, x in a]), plain)
    np.testing.assert_array_equal(plain.numpy(), train.head(12)[torch.cat([i for i, _ in a])].numpy())


def test_interrupted_training_on_a_streamed_folder_resumes_to_the_same_weights(tmp_path):
    from edgedistill.distill import SupervisedTask
    from edgedistill.models import build_model
    from edgedistill.training import fit

    root = _folder(tmp_path / "photos")
    data = load_data(DataConfig(dataset="folder", path=root, workers=1, image_size=16), 0)
    aug, cfg = Augment(random_resized_crop=0.5, flip=True), DistillStage(epochs=3, lr=0.05)

    def model():
        torch.manual_seed(3)
        return build_model("cnn", [4, 8, 8], (3, 16, 16), 2)

    def weights(m):
        return torch.cat([p.detach().flatten() for p in m.state_dict().values() if p.dtype.is_floating_point])

    straight = model()
    fit(straight, SupervisedTask(), data, cfg, stage="s", checkpoint=tmp_path / "a.pt", batch_size=5, seed=0,
        augment=aug)

    class Crash(Exception):
        pass

    def crash(record):
        if record["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(model(), SupervisedTask(), data, cfg, stage="s", checkpoint=tmp_path / "b.pt", batch_size=5, seed=0,
            augment=aug, on_epoch=crash)
    resumed = model()
    history = fit(resumed, SupervisedTask(), data, cfg, stage="s", checkpoint=tmp_path / "b.pt", batch_size=5,
                  seed=0, augment=aug)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert torch.equal(weights(resumed), weights(straight))


def test_csv_and_jsonl_lists_with_names_or_indices(tmp_path):
    root = _folder(tmp_path / "photos")
    files = list_image_folder(root)
    names = ["cat", "dog"]
    rows = [(f.relative_to(root).as_posix(), names[y]) for f, y in zip(files.train_files, files.y_train)]
    (root / "train.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    (root / "test.jsonl").write_text("".join(json.dumps({"path": f.relative_to(root).as_posix(), "label": int(y)}) + "\n"
                                             for f, y in zip(files.test_files, files.y_test)))
    data = load_data(DataConfig(dataset="folder", path=root / "train.csv", workers=0), 0, preprocess=PRE)
    assert data.spec.labels == ("cat", "dog") and len(split_of(data.x_train)) + len(data.x_test) == 12  # 20% held out
    (root / "test.csv").write_text("".join(f"{p},{lab}\n" for p, lab in rows[:4]))  # no header, test split given
    both = load_data(DataConfig(dataset="folder", path=root / "train.csv", test=root / "test.csv", workers=0), 0,
                     preprocess=PRE)
    assert len(split_of(both.x_train)) == 12 and both.y_test.tolist() == [0, 0, 0, 0]
    np.testing.assert_array_equal(_pixels(both.x_test[0], PRE),
                                  _hand_crop(files.train_files[0], 20, 0.8, Image.Resampling.BICUBIC))
    rows_idx = "".join(json.dumps({"path": p, "label": names.index(lab)}) + "\n" for p, lab in rows)
    (root / "train.jsonl").write_text(rows_idx)
    by_index = load_data(DataConfig(dataset="folder", path=root / "train.jsonl", test=root / "test.jsonl", workers=0,
                                    labels=["kitten", "puppy"]), 0, preprocess=PRE)
    assert by_index.spec.labels == ("kitten", "puppy") and by_index.y_train.tolist() == list(files.y_train)
    assert torch.equal(by_index.x_test, data.x_test[:0]) is False and len(by_index.x_test) == 6


@pytest.mark.parametrize("content, field, message", [
    ("photos/train/cat/0.png,cat\nmissing/x.jpg,dog\n", "data.path",
     r"^data\.path: row 2 of l\.csv names missing/x\.jpg, which does not exist \(paths are relative to .*\); fix"),
    ("photos/train/cat/0.png,cat\nphotos/train/dog/0.png,emu\n", "data.path",
     r"^data: train label 'emu' \(example 1 of the train split\) is not one of data\.labels \['cat', 'dog'\]"),
    ("photos/train/cat/0.png\n", "data.path", r"^data\.path: row 1 of l\.csv is not path,label"),
    ("", "data.path", r"^data\.path: .*l\.csv lists no images"),
])
def test_list_errors_name_the_row_and_the_fix(tmp_path, content, field, message):
    _folder(tmp_path / "photos")
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(UserError, match=message) as e:
        load_data(DataConfig(dataset="folder", path=tmp_path / "l.csv", labels=["cat", "dog"], workers=0), 0,
                  preprocess=PRE)
    assert "\n" not in str(e.value)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    root = _folder(tmp_path / "photos")
    bad = root / "train" / "dog" / "9.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(UserError, match=r"^data\.path: .*9\.jpg is not a readable image \(.*\); replace or remove"):
        load_data(DataConfig(dataset="folder", path=root, image_size=8), 0)
    good = (root / "train" / "dog" / "1.jpg").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # the header reads; the pixels do not
    data = load_data(DataConfig(dataset="folder", path=root, workers=2), 0, preprocess=PRE)
    with pytest.raises(UserError, match=r"^data\.path: .*9\.jpg is not a readable image") as e:
        for _ in split_of(data.x_train).batches(torch.arange(13), 4):
            pass
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    (root / "train" / "emu").mkdir()
    with pytest.raises(UserError, match=r"^data\.path: .*emu has no images .*; add some or remove the folder"):
        load_data(DataConfig(dataset="folder", path=root, image_size=8), 0)


def test_cache_hit_miss_and_invalidation(tmp_path, monkeypatch):
    root, cache = _folder(tmp_path / "photos"), tmp_path / "cache"
    cfg = DataConfig(dataset="folder", path=root, cache=cache, workers=0)
    first = load_data(cfg, 0, preprocess=PRE)
    made = sorted(p.name for p in cache.iterdir())
    assert len(made) == 2 and all(n.endswith("x3x25x25.npy") for n in made)  # train 12, test 6, stored at 25 px
    assert {n.split("-")[2] for n in made} == {"12x3x25x25.npy", "6x3x25x25.npy"}
    uncached = load_data(cfg.model_copy(update={"cache": False}), 0, preprocess=PRE)
    assert torch.equal(split_of(first.x_train).head(12), split_of(uncached.x_train).head(12))
    assert torch.equal(first.x_test, uncached.x_test)

    def no_build(*a, **k):
        raise AssertionError("a hit must not rebuild")

    monkeypatch.setattr(image_cache, "build", no_build)
    again = load_data(cfg, 0, preprocess=PRE)
    assert torch.equal(split_of(again.x_train).head(12), split_of(first.x_train).head(12))
    monkeypatch.undo()
    changed = root / "train" / "cat" / "0.png"
    _photo(changed, (40, 30), 99)
    os.utime(changed, ns=(1, 10**18))
    load_data(cfg, 0, preprocess=PRE)  # one changed photo: the train file is new, the test file still hits
    assert len(list(cache.iterdir())) == 3
    load_data(cfg, 0, preprocess=Preprocess(size=(16, 16), crop_pct=1.0))  # another size: new files
    assert len(list(cache.iterdir())) == 5
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # nothing half-written left


def test_limit_train_and_teacher_logits_on_a_streamed_split(tmp_path):
    from edgedistill.distill import DistillationTask
    from edgedistill.models import build_model

    root = _folder(tmp_path / "photos")
    data = load_data(DataConfig(dataset="folder", path=root, workers=0, limit_train=5), 0, preprocess=PRE)
    train = split_of(data.x_train)
    assert len(train) == 5 and len(data.y_train) == 5
    full = split_of(load_data(DataConfig(dataset="folder", path=root, workers=0), 0, preprocess=PRE).x_train)
    keep = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:5]
    assert torch.equal(train.head(5), full.head(12)[keep])
    torch.manual_seed(0)
    teacher = build_model("cnn", [4, 8, 8], (3, 20, 20), 2).eval()
    task = DistillationTask(teacher, temperature=2.0, kd_weight=1.0, ce_weight=0.0)
    task.cache_teacher_logits(data.x_train, batch_size=2)
    assert torch.allclose(task.cached_logits, teacher(train.head(5)), atol=1e-5)


@pytest.mark.slow
def test_a_whole_run_on_a_folder_of_mixed_sizes(tmp_path):
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    root = _folder(tmp_path / "photos", per_class=16)
    over = [f"data.dataset=folder", f"data.path={root}", "data.image_size=16", "data.workers=1", "data.normalization=null",
            f"data.cache={tmp_path / 'cache'}", "data.augment={random_resized_crop: 0.5, flip: true}",
            "stages.teacher.epochs=2", "stages.distill.epochs=2", "stages.prune.epochs=1", "stages.prune.steps=1",
            "stages.prune.measure_latency=false", "stages.qat.epochs=1", "stages.export.formats=[onnx, ort]",
            "stages.bench.repeats=5"]
    state = pipeline.run(load_recipe("digits", over), load_target("x86-avx2"), tmp_path / "out", quiet=True)
    assert state.student.spec.input_shape == (3, 16, 16) and state.student.spec.labels == ("cat", "dog")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    kinds = {(a["role"], a["kind"]) for a in report["artifacts"]}
    assert {("student", "onnx-fp32"), ("student", "onnx-int8")} <= kinds
    stages = {s["name"]: s for s in report["stages"]}
    assert 0 <= stages["distill"]["accuracy"] <= 1 and stages["prune"]["macs_kept"] < 1
