"""Datasets as tensors: a train split, a held-out split, and the preprocessing the model expects.

Images arrive as pixels in [0, 1] (N, C, H, W); the model sees them normalized by the recipe's
(or the training split's) per-channel mean/std, which the Core ML export reproduces with scale/bias. Photos of
any size (image folders and lists) are resized as the teacher's family asks, and their training split streams
from disk (edgedistill.data.folders). Text arrives as token ids from the teacher's tokenizer
(edgedistill.data.text)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edgedistill.data.labels import check_training, count_classes
from edgedistill.data.preprocess import Preprocess
from edgedistill.data.split import TrainSplit, split_of
from edgedistill.errors import UserError
from edgedistill.models.handle import ModelSpec
from edgedistill.recipe import DataConfig


@dataclass
class DataBundle:
    x_train: torch.Tensor | TrainSplit  # normalized float32 (N, C, H, W), token ids int64 (N, L), or photos
    # streamed from disk (edgedistill.data.streaming); stages read it through split_of(x_train)
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    spec: ModelSpec
    notes: tuple[str, ...] = ()  # what the user should know about the data, shown as warnings

    def to(self, device: torch.device) -> "DataBundle":
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))

    def with_training(self, x, y: torch.Tensor) -> "DataBundle":
        """The same held-out split and spec with another training split (data-free runs: none at first, then
        the generated transfer set)."""
        return replace(self, x_train=x, y_train=y)


def _load_arrays(cfg: DataConfig, seed: int):
    """(x_train, y_train, x_test, y_test, class names, notes): images as float32 NCHW in [0, 1]. The labels
    are checked against the classes before any split, so an error's example index is the one in the file."""
    from sklearn.model_selection import train_test_split

    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]  # pixel values 0..16 -> [0, 1]
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, d.target, test_size=cfg.test_fraction, random_state=seed, stratify=d.target
        )
        return x_tr, y_tr, x_te, y_te, *_classes(cfg, None, y_tr, y_te)
    from edgedistill.data.sources import read_image_folder, read_npz

    arrays = read_npz(cfg.path) if cfg.dataset == "npz" else read_image_folder(cfg.path)
    y_test = arrays.y_test if arrays.y_test is not None else np.empty(0, np.int64)
    names, notes = _classes(cfg, arrays.class_names, arrays.y_train, y_test)

    def nchw(x: np.ndarray) -> np.ndarray:
        return x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0

    if arrays.x_test is not None:
        return nchw(arrays.x_train), arrays.y_train, nchw(arrays.x_test), arrays.y_test, names, notes
    x_tr, x_te, y_tr, y_te = _split(arrays.x_train, arrays.y_train, cfg, seed)
    return nchw(x_tr), y_tr, nchw(x_te), y_te, names, notes


def _classes(cfg: DataConfig, own: list[str] | None, y_train: np.ndarray, y_test: np.ndarray):
    """(class names, notes) for labels that fit them (edgedistill.data.labels)."""
    labels, notes = _class_names(cfg, own)
    k = count_classes(y_train, y_test, len(labels) if labels else None,
                      "data.labels" if labels == cfg.labels else "the data's class names")
    return labels or [str(i) for i in range(k)], notes


def _split(x: list, y: list, cfg: DataConfig, seed: int):
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=cfg.test_fraction, random_state=seed, stratify=y)
    except ValueError as e:
        raise UserError(f"data.test_fraction: cannot split {len(y)} examples ({e}); "
                        "give a test split or more examples per class") from None


def load_text(cfg: DataConfig, seed: int, tokenizer_dir: Path) -> DataBundle:
    """Token ids (N, max_length) from the teacher's tokenizer; the spec carries the padding id."""
    from edgedistill.data import text
    from edgedistill.models.hf import load_tokenizer, max_positions

    x_tr, y_tr, x_te, y_te = text.read_splits(cfg)
    # before any split: an error's example index is the one in the file
    y_tr, y_te, labels = text.label_indices(list(y_tr), list(y_te or []), cfg.labels)
    if x_te is None:
        x_tr, x_te, y_tr, y_te = _split(x_tr, y_tr, cfg, seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    positions = max_positions(tokenizer_dir)
    if positions is not None and cfg.max_length > positions:
        raise UserError(f"data.max_length: {cfg.max_length} tokens, but the teacher has position embeddings for "
                        f"{positions}; set data.max_length <= {positions}")
    if tokenizer.pad_token_id is None:
        raise UserError(f"teacher.path: the tokenizer in {tokenizer_dir} has no padding token; set one and save it")
    spec = ModelSpec(task="text-classification", input_shape=(cfg.max_length,), num_classes=len(labels),
                     labels=tuple(labels), mean=(), std=(), pad_id=int(tokenizer.pad_token_id))
    ids = [torch.from_numpy(text.tokenize(tokenizer, list(x), cfg.max_length)) for x in (x_tr, x_te)]
    return DataBundle(ids[0], torch.from_numpy(y_tr), ids[1], torch.from_numpy(y_te), spec)


def _texts(path: Path, field: str, split: str) -> list[str] | None:
    """The texts of one split: x_<split> of an npz of strings (None when it has none), or a .txt file's lines."""
    if path.suffix.lower() == ".txt":
        if split == "test" and field == "data.train":
            return None
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line]
    if path.suffix.lower() != ".npz":
        raise UserError(f"{field}: {path.name} is not an .npz of strings or a .txt file")
    with np.load(path, allow_pickle=False) as z:
        has = set(z.files)
    key = f"x_{split}" if f"x_{split}" in has or field == "data.train" else "x_train"
    if key not in has:
        return None
    from edgedistill.generative.corpus import load_sentences

    return load_sentences(path, key[2:], field)


def load_lm(cfg: DataConfig, seed: int, tokenizer_dir: Path) -> DataBundle:
    """Texts for a causal language model: token rows (N, max_length), right-padded, each text then EOS; y holds
    each row's length (the attention mask, whatever the pad id is)."""
    from edgedistill.generative.corpus import encode
    from edgedistill.generative.lm import load_tokenizer

    train = _texts(cfg.train, "data.train", "train")
    test = _texts(cfg.test, "data.test", "test") if cfg.test is not None else _texts(cfg.train, "data.train", "test")
    if not train:
        raise UserError(f"data.train: {cfg.train} holds no text")
    if test is None:
        train, test = _split(train, [0] * len(train), cfg, seed)[:2]
    tokenizer = load_tokenizer(tokenizer_dir)
    spec = ModelSpec(task="text-generation", input_shape=(cfg.max_length,), num_classes=len(tokenizer), labels=(),
                     mean=(), std=(), pad_id=int(tokenizer.pad_token_id))
    rows = []
    for texts in (train, test):
        ids, mask = encode(tokenizer, texts, cfg.max_length)
        ids = torch.cat([ids, ids.new_full((len(ids), cfg.max_length - ids.shape[1]), spec.pad_id)], 1)
        rows.append((ids, mask.sum(1)))
    return DataBundle(rows[0][0], rows[0][1], rows[1][0], rows[1][1], spec)


def load_data(cfg: DataConfig, seed: int, tokenizer_dir: Path | None = None,
              preprocess: Preprocess | None = None) -> DataBundle:
    """The task's data; `preprocess` (the teacher family's) decides how images are sized and normalized."""
    if cfg.dataset == "lm":
        data = load_lm(cfg, seed, tokenizer_dir)
    elif cfg.dataset == "text":
        data = load_text(cfg, seed, tokenizer_dir)
    else:
        data = _load_images(cfg, seed, preprocess)
    if cfg.limit_train is not None and cfg.limit_train < len(data.y_train):  # a seeded subset, same every run
        keep = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))[: cfg.limit_train]
        data = data.with_training(split_of(data.x_train).take(keep), data.y_train[keep])
    if not data.spec.is_lm:
        untrained = check_training(data.y_train.numpy(), data.spec.labels)
        data = replace(data, notes=(*data.notes, *filter(None, [untrained])))
    return data


def _load_images(cfg: DataConfig, seed: int, preprocess: Preprocess | None = None) -> DataBundle:
    if preprocess is not None and cfg.image_size is not None:  # the family's recipe at the size asked for
        preprocess = replace(preprocess, size=tuple(cfg.image_size))
    if cfg.dataset == "folder":
        from edgedistill.data import folders

        files = folders.list_files(cfg)
        pre = folders.geometry(cfg, preprocess, files[0] + (files[2] or []))
        if pre is not None:
            return _load_streamed(cfg, seed, pre, files)
    x_tr, y_tr, x_te, y_te, labels, notes = _load_arrays(cfg, seed)
    if preprocess is not None:  # arrays a model wants at another size: resized as photos are
        from edgedistill.data import folders

        train, test = folders.array_images(x_tr, x_te)
        return _streamed_bundle(cfg, seed, preprocess, train, y_tr, test, y_te, labels, notes)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(f"data: train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}")
    y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
    num_classes = len(labels)
    channels = x_tr.shape[1]
    if cfg.normalization is not None:
        mean, std = np.array(cfg.normalization.mean), np.array(cfg.normalization.std)
        if len(mean) != channels:
            raise UserError(
                f"data.normalization: has {len(mean)} channel(s) but the images have {channels}; give one mean/std per channel"
            )
    else:
        mean = x_tr.mean(axis=(0, 2, 3))
        std = x_tr.std(axis=(0, 2, 3)) + 1e-6
    spec = ModelSpec(
        task="image-classification",
        input_shape=tuple(int(d) for d in x_tr.shape[1:]),
        num_classes=num_classes,
        labels=tuple(labels),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def norm(x: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(np.ascontiguousarray(x)) - m) / s).float()

    return DataBundle(norm(x_tr), torch.from_numpy(y_tr), norm(x_te), torch.from_numpy(y_te), spec, notes)


def _load_streamed(cfg: DataConfig, seed: int, pre: Preprocess, files) -> DataBundle:
    from edgedistill.data import folders
    from edgedistill.data.streaming import FileImages

    train, y_tr, test, y_te, own, fixed = files
    labels, notes = (own, ()) if fixed else _classes(cfg, own, y_tr, y_te if y_te is not None else np.empty(0, int))
    if test is None:  # a held-out share, stratified and seeded as for arrays
        train, test, y_tr, y_te = _split(train, y_tr, cfg, seed)
    return _streamed_bundle(cfg, seed, pre, FileImages(train), y_tr, FileImages(test), y_te, labels, notes)


def _streamed_bundle(cfg, seed, pre, train, y_tr, test, y_te, labels, notes) -> DataBundle:
    from edgedistill.data import folders

    x_tr, x_te, mean, std = folders.streamed(cfg, pre, train, test, seed)
    spec = ModelSpec(task="image-classification", input_shape=(pre.channels, *pre.size), num_classes=len(labels),
                     labels=tuple(labels), mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
    return DataBundle(x_tr, torch.as_tensor(np.asarray(y_tr), dtype=torch.int64), x_te,
                      torch.as_tensor(np.asarray(y_te), dtype=torch.int64), spec, notes)


def _class_names(cfg: DataConfig, own: list[str] | None) -> tuple[list[str] | None, tuple[str, ...]]:
    """The class names, and a note when data.labels disagree with them. Names that come with the data (an
    image folder's class folders, an npz's class_names) win over data.labels, which a recipe copied for other
    data may carry."""
    if not own:
        return cfg.labels, ()
    if cfg.labels is None or list(cfg.labels) == list(own):
        return list(own), ()

    def shown(names: list[str]) -> str:
        return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")

    return list(own), (f"data.labels ({shown(cfg.labels)}) differ from the class names the data carries "
                       f"({shown(own)}); the data's names are used, data.labels is ignored",)
