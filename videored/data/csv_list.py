"""Video list files (`path label` lines) shared by the dataset, `data scan` and the list writers.

Format (Kinetics/TimeSformer style): one video per line, the path, one or more spaces, an integer
label. The label is the LAST whitespace-separated token, so paths may contain spaces (Kinetics class
folders such as `air drumming/`). Relative paths are resolved against the csv file's own folder,
absolute paths are used as they are. Blank lines are ignored. Anything else that does not parse is
a malformed line, reported with its 1-based line number (never silently dropped).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple


class ListRow(NamedTuple):
    """One non-blank line of a video list.

    `error` is None for a good row. For a malformed row, `path` holds the raw line text, `label`
    is -1 and `error` says what is wrong.
    """

    line: int
    path: str
    label: int
    error: str | None = None


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names from `classes.txt` (index = 0-based line number)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def classes_file_for(csv_path: str | os.PathLike) -> Path | None:
    """`classes.txt` beside the csv, if there is one."""
    candidate = Path(csv_path).parent / "classes.txt"
    return candidate if candidate.is_file() else None


DATASET_INFO = "dataset.json"  # optional facts about a dataset folder, e.g. hflip_preserves_label


def read_dataset_info(csv_path: str | os.PathLike) -> dict:
    """Contents of `dataset.json` beside the csv, or {} when there is none."""
    path = Path(csv_path).parent / DATASET_INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from e


def iter_video_list(csv_path: str | os.PathLike, num_classes: int | None = None) -> Iterator[ListRow]:
    """Yield a `ListRow` for every non-blank line of `csv_path`, paths resolved to absolute.

    A label outside `[0, num_classes)` (when `num_classes` is given) is a malformed line too.
    """
    base = Path(csv_path).resolve().parent
    with open(csv_path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            text = raw.strip()
            if not text:
                continue
            parts = text.rsplit(maxsplit=1)
            if len(parts) != 2:
                yield ListRow(line_no, text, -1, "expected '<path> <label>', found one field")
                continue
            path, label_text = parts[0].strip(), parts[1]
            try:
                label = int(label_text)
            except ValueError:
                yield ListRow(line_no, text, -1, f"label {label_text!r} is not an integer")
                continue
            if label < 0 or (num_classes is not None and label >= num_classes):
                bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
                yield ListRow(line_no, text, -1, f"label {label} outside {bound}")
                continue
            yield ListRow(line_no, str(base / path), label)


def write_video_list(csv_path: str | os.PathLike, rows: Iterable[tuple[str, int]]) -> int:
    """Write `path label` lines; returns the number written. Paths are written as given."""
    n = 0
    with open(csv_path, "w", encoding="utf-8") as f:
        for path, label in rows:
            if "\n" in path:
                raise ValueError(f"path contains a newline: {path!r}")
            f.write(f"{path} {int(label)}\n")
            n += 1
    return n


def write_classes(path: str | os.PathLike, names: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for name in names:
            f.write(f"{name}\n")
