"""DAVIS-style video object segmentation folders as test clips with per-frame object masks.

    <root>/JPEGImages/[480p/]<video>/00000.jpg ...
    <root>/Annotations/[480p/]<video>/00000.png ...   (non-zero = object)
    <root>/ImageSets/2017/val.txt                      optional: one video name per line

Annotation PNGs: DAVIS 2017 stores palette images whose values are object ids (0 = background,
1..K = objects), DAVIS 2016 binary 0/255 masks; the foreground is any non-zero value, so all
objects together form the object mask. RGB annotations count a pixel as object when any channel
is non-zero.

This module finds the set's frame folders and reads their annotations (the object masks);
`davis_set.davis_clips` makes them a test-clip dataset.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .frame_folder import frame_files, is_frame_folder


def davis_frames_root(root: str | os.PathLike, resolution: str | None = None) -> Path:
    """`<root>/JPEGImages[/<resolution>]`; DAVIS's `480p` level is used when present."""
    base = Path(root) / "JPEGImages"
    if not base.is_dir():
        raise FileNotFoundError(f"{root}: no JPEGImages/ folder (expected a DAVIS-style layout "
                                "JPEGImages/<video>/<frame>.jpg + Annotations/<video>/<frame>.png)")
    if resolution is None and (base / "480p").is_dir() and not is_frame_folder(base / "480p"):
        resolution = "480p"
    frames = base / resolution if resolution else base
    if not frames.is_dir():
        raise FileNotFoundError(f"{frames}: no such folder (resolution {resolution!r})")
    return frames


def davis_videos(root: str | os.PathLike, *, resolution: str | None = None,
                 split_file: str | os.PathLike | None = None) -> list[Path]:
    """Frame folders of the set, sorted by name; `split_file` (one video name per line, e.g.
    `ImageSets/2017/val.txt`, relative to `root` or absolute) selects and orders them."""
    frames = davis_frames_root(root, resolution)
    if split_file is None:
        videos = sorted(p for p in frames.iterdir() if p.is_dir())
        if not videos:
            raise ValueError(f"{frames}: no video folders")
        return videos
    listing = Path(split_file) if Path(split_file).is_absolute() else Path(root) / split_file
    names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if not names:
        raise ValueError(f"{listing}: no video names")
    return [frames / name for name in names]  # a missing folder fails (and is counted) per item


def annotation_folder(frames: str | os.PathLike) -> Path | None:
    """`.../JPEGImages/<...>/<video>` -> `.../Annotations/<...>/<video>`; None outside that layout."""
    parts = Path(frames).resolve().parts
    if "JPEGImages" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("JPEGImages")  # the last JPEGImages component
    return Path(*parts[:i], "Annotations", *parts[i + 1:])


def has_annotations(frames: str | os.PathLike) -> bool:
    folder = annotation_folder(frames)
    return folder is not None and folder.is_dir()


def load_annotations(frames: str | os.PathLike,
                     indices: Sequence[int] | None = None) -> np.ndarray:
    """(num_frames, H, W) bool object masks of a DAVIS-style frame folder (non-zero = object);
    indices: only these frames' masks (len(indices), H, W), in that order.

    Every frame read needs `<Annotations>/<frame stem>.png` of the frame's size; a missing or
    unreadable one is an error naming the file (DAVIS test-dev annotates only the first frame:
    not scorable). A frame that is not read may lack its annotation (a clip samples a few).
    """
    from PIL import Image

    folder = annotation_folder(frames)
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"{frames}: no Annotations folder beside JPEGImages "
                                f"(looked for {folder})")
    masks = []
    files = frame_files(frames)
    for frame in files if indices is None else [files[i] for i in indices]:
        png = folder / f"{frame.stem}.png"
        if not png.is_file():
            raise FileNotFoundError(f"annotation missing for frame {frame.name}: {png}")
        try:
            with Image.open(png) as im:
                a = np.asarray(im)
        except (OSError, ValueError) as e:
            raise ValueError(f"{png}: cannot read annotation: {e}") from e
        masks.append(a.any(axis=-1) if a.ndim == 3 else a != 0)  # palette ids or RGB
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise ValueError(f"{folder}: annotations differ in size: {sorted(shapes)}")
    return np.stack(masks)


__all__ = ["annotation_folder", "davis_frames_root", "davis_videos", "has_annotations", "load_annotations"]
