"""Class labels against the classes they claim. A classifier's size comes from its labels, so one stray label
must not silently add classes: declared classes (data.labels, the data's own names) bound the labels; without
them the labels must be 0..K-1 with an example of every class."""

from __future__ import annotations

import numpy as np

from edgedistill.errors import UserError


def _first(splits: dict[str, np.ndarray], bad) -> tuple[str, int, int]:
    """(split, index, value) of the first label for which `bad(labels)` holds."""
    for split, y in splits.items():
        hits = np.flatnonzero(bad(y))
        if len(hits):
            return split, int(hits[0]), int(y[hits[0]])
    raise AssertionError("no such label")


def count_classes(y_train: np.ndarray, y_test: np.ndarray, declared: int | None, declared_by: str) -> int:
    """The number of classes: `declared` when the classes are named (by `declared_by`), else max label + 1."""
    splits = {"train": np.asarray(y_train), "test": np.asarray(y_test)}
    if declared is not None:
        if any((y >= declared).any() for y in splits.values()):
            split, i, value = _first(splits, lambda y: y >= declared)
            raise UserError(f"data: {split} label {value} (example {i} of the {split} split) is not one of the "
                            f"{declared} classes {declared_by} names (0..{declared - 1}); fix that label, or "
                            f"name its class in {declared_by}")
        return declared
    top = max(int(y.max()) for y in splits.values() if len(y))
    present = np.unique(np.concatenate(list(splits.values())))
    missing = top + 1 - len(present)
    if missing:
        split, i, _ = _first(splits, lambda y: y == top)
        raise UserError(f"data: {split} label {top} (example {i} of the {split} split) implies {top + 1} classes, "
                        f"but {missing} of the ids 0..{top} have no example; labels must be 0..K-1 with every "
                        "class present: fix the stray labels, or name every class in data.labels")
    return top + 1


def check_training(y_train, labels: tuple[str, ...]) -> str | None:
    """Refuse training data of one class (a model that always answers it scores 100%); return a warning
    naming the classes without a training example (the model cannot learn them), if any."""
    counts = np.bincount(np.asarray(y_train), minlength=len(labels))
    trained = np.flatnonzero(counts)
    if len(trained) < 2:
        only = f"only class '{labels[trained[0]]}'" if len(trained) else "no example"
        raise UserError(f"data: the training split has {only}; a classifier needs examples of at least 2 classes")
    untrained = [labels[c] for c in np.flatnonzero(counts == 0)]
    if not untrained:
        return None
    shown = ", ".join(f"'{n}'" for n in untrained[:5]) + (f" and {len(untrained) - 5} more" if len(untrained) > 5 else "")
    return (f"data: {len(untrained)} of {len(labels)} classes have no training example ({shown}); the model "
            "cannot learn them")
