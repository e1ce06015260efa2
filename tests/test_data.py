import numpy as np
import pytest

from edgedistill.data import load_data
from edgedistill.errors import UserError
from edgedistill.recipe import DataConfig


def test_digits_split_is_stratified_and_normalized():
    d = load_data(DataConfig(), seed=0)
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.x_train) + len(d.x_test) == 1797
    assert abs(len(d.x_test) / 1797 - 0.2) < 0.01
    counts = np.bincount(d.y_test.numpy(), minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # about 36 per class
    assert d.spec.num_classes == 10 and d.spec.labels == tuple(str(i) for i in range(10))
    # computed normalization: the training split comes out near zero mean, unit std
    assert abs(float(d.x_train.mean())) < 0.05 and abs(float(d.x_train.std()) - 1) < 0.05
    assert load_data(DataConfig(), seed=1).y_test.tolist() != d.y_test.tolist()


def test_npz_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8), y_test=np.arange(8) % 4)
    d = load_data(DataConfig(dataset="npz", path=path), seed=0)
    assert d.x_train.shape == (40, 3, 6, 6) and d.spec.num_classes == 4 and len(d.spec.mean) == 3


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.zeros((4, 8, 8), np.uint8)), "has no array 'y_train'"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(3)), "must match in count"),
    (dict(x_train=np.full((4, 8, 8), 3.0), y_train=np.zeros(4)), "must lie in \\[0, 1\\]"),
])
def test_npz_errors_name_the_problem(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message):
        load_data(DataConfig(dataset="npz", path=path, test_fraction=0.5), seed=0)


def test_label_and_channel_mismatch():
    with pytest.raises(UserError, match=r"data: train label \d \(example \d+ of the train split\) is not one of the 3 "
                                        r"classes data.labels names \(0..2\)"):
        load_data(DataConfig(labels=["a", "b", "c"]), seed=0)
    with pytest.raises(UserError, match="data.normalization: has 3 channel"):
        load_data(DataConfig(normalization={"mean": [0, 0, 0], "std": [1, 1, 1]}), seed=0)


def test_limit_train_takes_the_same_seeded_subset_and_keeps_the_test_split():
    full = load_data(DataConfig(), seed=0)
    a = load_data(DataConfig(limit_train=100), seed=0)
    b = load_data(DataConfig(limit_train=100), seed=0)
    assert len(a.y_train) == 100 and len(a.y_test) == len(full.y_test)
    assert np.array_equal(a.x_train.numpy(), b.x_train.numpy())
    assert len(set(a.y_train.tolist())) == 10  # a random subset, not the first rows of one class
    rows = {tuple(r) for r in full.x_train.flatten(1).numpy().round(5).tolist()}
    assert all(tuple(r) in rows for r in a.x_train.flatten(1).numpy().round(5).tolist())
