"""Lists of images: a .csv or .jsonl file of `path,label` rows (paths relative to the list's folder; a label is
a class name or index), and a look at every listed image's header (size, colour) before any pixel is decoded,
so a file that is no image fails the run at once rather than in its third epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

from edgedistill.data.sources import _GRAY_MODES, _WIDE_MODES, _why
from edgedistill.errors import UserError

LIST_SUFFIXES = (".csv", ".jsonl")
_HEADER = ("path", "label")


def read_list(path: Path, field: str) -> tuple[list[Path], list[str]]:
    """(files, labels as written) of a .csv (`path,label`, an optional header row of those names) or .jsonl
    (`{"path": ..., "label": ...}` per line) list."""
    if not path.is_file():
        raise UserError(f"{field}: {path} does not exist; point it at a .csv or .jsonl list of path,label rows")
    try:
        text = path.read_text(encoding="utf-8")
        rows = _jsonl(text, path, field) if path.suffix.lower() == ".jsonl" else _csv(text, path, field)
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{field}: {path} cannot be read ({_why(e)}); save it as UTF-8 text") from None
    if not rows:
        raise UserError(f"{field}: {path} lists no images; add path,label rows")
    files = []
    for line, (name, _) in rows:
        file = (path.parent / name) if not Path(name).is_absolute() else Path(name)
        if not file.is_file():
            raise UserError(f"{field}: row {line} of {path.name} names {name}, which does not exist (paths are "
                            f"relative to {path.parent}); fix the path or remove the row")
        files.append(file)
    return files, [label for _, (_, label) in rows]


def _csv(text: str, path: Path, field: str) -> list[tuple[int, tuple[str, str]]]:
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(text.splitlines())) if any(c.strip() for c in r)]
    if rows and tuple(c.strip().lower() for c in rows[0][1][:2]) == _HEADER:
        rows = rows[1:]
    bad = next((line for line, r in rows if len(r) < 2 or not r[0].strip() or not r[1].strip()), None)
    if bad is not None:
        raise UserError(f"{field}: row {bad} of {path.name} is not path,label; write one image path and its "
                        "label per row")
    return [(line, (r[0].strip(), r[1].strip())) for line, r in rows]


def _jsonl(text: str, path: Path, field: str) -> list[tuple[int, tuple[str, str]]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not row.get("path") or row.get("label") in (None, ""):
            raise UserError(f'{field}: line {line} of {path.name} is not {{"path": ..., "label": ...}}; write '
                            "one such JSON object per line")
        rows.append((line, (str(row["path"]), str(row["label"]))))
    return rows


def scan(files: list[Path], field: str) -> tuple[set[tuple[int, int]], bool]:
    """(the distinct (W, H) sizes, whether every image is grayscale), from the headers alone."""
    sizes, gray = set(), True
    for file in files:
        try:
            with Image.open(file) as im:
                mode, size = im.mode, im.size
        except Exception as e:  # UnidentifiedImageError, OSError, DecompressionBombError, ...
            raise UserError(f"{field}: {file} is not a readable image ({_why(e)}); replace or remove it") from None
        if mode in _WIDE_MODES:
            raise UserError(f"{field}: {file} has 16-bit/float pixels (mode {mode}); save it as 8-bit")
        sizes.add(size)
        gray = gray and mode in _GRAY_MODES
    return sizes, gray
