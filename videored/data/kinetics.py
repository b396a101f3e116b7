"""Kinetics-400 preparation: official annotation CSVs + downloaded clips -> `path label` lists.

Annotation CSVs (official release, CVDF mirror): header `label,youtube_id,time_start,time_end,split`
(extra columns such as `is_cc` are ignored). Clip files are matched by name, anywhere under the
video roots (flat or one folder per class): `{youtube_id}_{start:06d}_{end:06d}.<ext>`, the
name used by the CVDF tarballs and the usual downloaders; a later root overrides an earlier one. Outputs in `out_dir`:
`classes.txt` (sorted train label names, index = line), `{train,val,test}.csv` (absolute paths),
`missing_{split}.txt` (annotated clips not found) and `report.json` (counts).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from videored.data.csv_list import read_classes, write_classes, write_video_list

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
REQUIRED_FIELDS = ("label", "youtube_id", "time_start", "time_end")


@dataclass(frozen=True)
class Annotation:
    line: int
    label: str
    youtube_id: str
    time_start: int
    time_end: int

    @property
    def clip_name(self) -> str:
        return clip_name(self.youtube_id, self.time_start, self.time_end)


def clip_name(youtube_id: str, time_start: int, time_end: int) -> str:
    """File stem of a Kinetics clip, e.g. `---QUuC4vJs_000084_000094`."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def read_annotations(csv_path: str | os.PathLike) -> tuple[list[Annotation], list[str]]:
    """Parse an annotation CSV; returns (annotations, errors) with errors as `file:line: reason`."""
    annotations, errors = [], []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [k for k in REQUIRED_FIELDS if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: header lacks {missing} (found {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            try:
                label = (row["label"] or "").strip()
                if not label:
                    raise ValueError("empty label")
                annotations.append(
                    Annotation(line, label, row["youtube_id"].strip(), int(float(row["time_start"])), int(float(row["time_end"])))
                )
            except (ValueError, TypeError, AttributeError) as e:
                errors.append(f"{csv_path}:{line}: {e}")
    return annotations, errors


def index_videos(roots: str | os.PathLike | Sequence[str | os.PathLike], exts: Iterable[str] = VIDEO_EXTS) -> tuple[dict[str, Path], list[Path]]:
    """Map file stem -> path for every video under `roots` (walked in sorted order).

    A later root overrides an earlier one (e.g. CVDF's `replacement/` clips for corrupted train
    clips); a second file with the same stem inside one root is ignored and returned as a
    duplicate.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    exts = tuple(e.lower() for e in exts)
    found: dict[str, Path] = {}
    duplicates: list[Path] = []
    for root in roots:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"video folder not found: {root}")
        in_root: set[str] = set()
        for dirpath, dirnames, files in os.walk(root):
            dirnames.sort()
            for name in sorted(files):
                if name.startswith(".") or not name.lower().endswith(exts):
                    continue  # hidden names include our own partial re-encodes
                path = Path(dirpath) / name
                if path.stem in in_root:
                    duplicates.append(path)
                    continue
                in_root.add(path.stem)
                found[path.stem] = path.resolve()
    return found, duplicates


def make_kinetics_lists(
    video_roots: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    train_annotations: str | os.PathLike,
    val_annotations: str | os.PathLike,
    test_annotations: str | os.PathLike | None = None,
    classes_file: str | os.PathLike | None = None,
) -> dict:
    """Write `classes.txt`, `{train,val,test}.csv`, `missing_*.txt`, `report.json`; return the report.

    Without `test_annotations`, test.csv lists the validation clips: Kinetics-400 results
    (TimeSformer, IA-RED²) are reported on the validation set.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split_files = {"train": train_annotations, "val": val_annotations, "test": test_annotations or val_annotations}
    parsed = {split: read_annotations(path) for split, path in split_files.items()}
    if classes_file is not None:
        classes = read_classes(classes_file)
    else:
        classes = sorted({a.label for a in parsed["train"][0]})
    class_index = {name: i for i, name in enumerate(classes)}
    roots = [video_roots] if isinstance(video_roots, (str, os.PathLike)) else list(video_roots)
    videos, duplicates = index_videos(roots)

    report: dict = {
        "video_roots": [str(Path(r).resolve()) for r in roots],
        "num_classes": len(classes),
        "video_files_found": len(videos),
        "duplicate_files_ignored": len(duplicates),
        "test_from": "test annotations" if test_annotations else "validation annotations",
        "splits": {},
    }
    for split, (annotations, errors) in parsed.items():
        rows, missing, unknown = [], [], []
        for a in annotations:
            if a.label not in class_index:
                unknown.append(f"{split_files[split]}:{a.line}: label {a.label!r} not in classes")
                continue
            path = videos.get(a.clip_name)
            if path is None:
                missing.append(a.clip_name)
            else:
                rows.append((str(path), class_index[a.label]))
        write_video_list(out / f"{split}.csv", rows)
        (out / f"missing_{split}.txt").write_text("".join(f"{m}\n" for m in missing))
        report["splits"][split] = {
            "annotated": len(annotations) + len(errors),
            "listed": len(rows),
            "missing": len(missing),
            "bad_annotation_lines": errors + unknown,
        }
    write_classes(out / "classes.txt", classes)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _resize_one(job: tuple) -> tuple[str, str | None]:
    from videored.data.encoding import reencode_short_side

    src, dst, short_side, keyint, fastdecode = job
    try:
        reencode_short_side(src, dst, short_side, keyint=keyint, fastdecode=fastdecode)
        return src, None
    except Exception as e:  # a broken source clip: record and go on
        return src, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def resize_videos(
    src_root: str | os.PathLike,
    dst_root: str | os.PathLike,
    short_side: int | None = 320,
    workers: int = 4,
    progress: bool = True,
    keyint: int | None = 16,
    fastdecode: bool = False,
) -> dict:
    """Re-encode every video under `src_root` to `dst_root` (same relative path, `.mp4`) with
    its short side = `short_side` (None: each video's own size, to re-encode an existing resized
    copy) and a keyframe every `keyint` frames (`encoding.reencode_short_side`), in `workers`
    processes (PyAV, no ffmpeg binary).

    Resumable: outputs are renamed into place only when complete, and existing outputs are
    skipped, so re-running after an interruption continues where it stopped. Failures are
    listed in `dst_root/resize_failures.txt`. Returns counts.
    """
    import multiprocessing

    src_root, dst_root = Path(src_root), Path(dst_root)
    videos, _ = index_videos(src_root)
    jobs, done = [], 0
    for path in videos.values():
        dst = dst_root / path.relative_to(src_root.resolve()).with_suffix(".mp4")
        if dst.exists():
            done += 1
        else:
            jobs.append((str(path), str(dst), short_side, keyint, fastdecode))
    failures: list[str] = []
    if jobs:
        with multiprocessing.get_context("spawn").Pool(max(1, workers)) as pool:
            results = pool.imap_unordered(_resize_one, jobs, chunksize=4)
            if progress:
                from tqdm import tqdm

                results = tqdm(results, total=len(jobs), desc="resize", unit="video")
            failures = [f"{src}\t{err}" for src, err in results if err]
    dst_root.mkdir(parents=True, exist_ok=True)
    (dst_root / "resize_failures.txt").write_text("".join(f"{f}\n" for f in failures))
    return {"found": len(videos), "already_done": done, "resized": len(jobs) - len(failures), "failed": len(failures)}
