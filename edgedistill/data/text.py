"""Text classification data from local files: CSV, TSV, JSON lines, or an npz of strings (x_train, y_train
and optionally x_test, y_test, as the SST-2 copy). Labels are class indices or names; names are numbered
in sorted order. Tokenized with the teacher's tokenizer to a fixed length, padded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from edgedistill.errors import UserError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".npz")


def _rows(path: Path, field: str, text_column: str, label_column: str) -> tuple[list[str], list]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                header = reader.fieldnames or []
                rows = list(reader)
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
            if bad is not None:
                raise UserError(f"{field}: example {bad + 1} of {path.name} is not a JSON object; write one "
                                f'object per line, e.g. {{"{text_column}": "...", "{label_column}": 1}}')
            header = list(rows[0]) if rows else []
        else:
            raise UserError(f"{field}: {path.name} is not a {', '.join(SUFFIXES)} file")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise UserError(f"{field}: {path} cannot be read as {suffix[1:].upper()} ({str(e).splitlines()[0]})") from None
    for column, what in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in header:
            raise UserError(f"{field}: {path.name} has no column '{column}' (columns: {', '.join(map(str, header))}); "
                            f"set data.{what}")
    if not rows:
        raise UserError(f"{field}: {path} has no examples")
    try:
        return [str(r[text_column]) for r in rows], [r[label_column] for r in rows]
    except (KeyError, TypeError):
        raise UserError(f"{field}: every row of {path.name} needs '{text_column}' and '{label_column}'") from None


def _npz(path: Path, field: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{field}: {path} is not a readable npz of strings ({str(e).splitlines()[0][:100]})") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise UserError(f"{field}: {path.name} needs arrays x_train (strings) and y_train; it has {sorted(arrays)}")
    return arrays


def read_splits(cfg) -> tuple[list[str], list, list[str] | None, list | None]:
    """(train texts, train labels, test texts, test labels); the test split is None when the data has none."""
    if cfg.train.suffix.lower() == ".npz":
        arrays = _npz(cfg.train, "data.train")
        x_tr, y_tr = arrays["x_train"].tolist(), arrays["y_train"].tolist()
        x_te = arrays["x_test"].tolist() if "x_test" in arrays else None
        y_te = arrays["y_test"].tolist() if "y_test" in arrays else None
    else:
        x_tr, y_tr = _rows(cfg.train, "data.train", cfg.text_column, cfg.label_column)
        x_te = y_te = None
    if cfg.test is not None:
        if cfg.test.suffix.lower() == ".npz":
            arrays = _npz(cfg.test, "data.test")
            x_te, y_te = arrays.get("x_test", arrays["x_train"]).tolist(), arrays.get("y_test", arrays["y_train"]).tolist()
        else:
            x_te, y_te = _rows(cfg.test, "data.test", cfg.text_column, cfg.label_column)
    return x_tr, y_tr, x_te, y_te


def label_indices(y_train: list, y_test: list, names: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels as class indices 0..K-1 plus class names: integers stay as they are; any other value is a
    class name, numbered in sorted order (or in the order of data.labels when given)."""
    from edgedistill.data.labels import count_classes

    values = [*y_train, *y_test]

    def as_int(v):
        try:
            return int(v) if float(v) == int(float(v)) else None
        except (TypeError, ValueError):
            return None

    ints = [as_int(v) for v in values]
    if all(i is not None and i >= 0 for i in ints):
        y_tr, y_te = np.array(ints[: len(y_train)], dtype=np.int64), np.array(ints[len(y_train):], dtype=np.int64)
        k = count_classes(y_tr, y_te, len(names) if names else None, "data.labels")
        return y_tr, y_te, list(names) if names else [str(i) for i in range(k)]
    classes = list(names) if names else sorted({str(v) for v in values})
    index = {c: i for i, c in enumerate(classes)}
    for split, ys in (("train", y_train), ("test", y_test)):
        bad = next((i for i, v in enumerate(ys) if str(v) not in index), None)
        if bad is not None:
            shown = str(ys[bad]).encode("unicode_escape").decode()
            raise UserError(f"data: {split} label '{shown}' (example {bad} of the {split} split) is not one of "
                            f"data.labels {classes}; fix that label, or add its class to data.labels")
    return (np.array([index[str(v)] for v in y_train], dtype=np.int64),
            np.array([index[str(v)] for v in y_test], dtype=np.int64), classes)


def tokenize(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Token ids (N, max_length), int64, right-padded with the tokenizer's pad token."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                        return_attention_mask=False, return_token_type_ids=False, return_tensors="np")
    return encoded["input_ids"].astype(np.int64)
