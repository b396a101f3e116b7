"""A folder of frame images read as one video, and DAVIS-style per-frame object masks.

Layout (DAVIS 2016/2017; the resolution level is optional):

    <root>/JPEGImages/[480p/]<video>/<frame>.jpg     the frames, in natural name order
    <root>/Annotations/[480p/]<video>/<frame>.png    one mask per frame, same stem and size

A frame folder is any directory whose files include images; `FrameFolderVideo` gives it the
interface of the decoders in `decoding.py` (`num_frames`, `fps`, `get_frames`), so the video
dataset, its test transforms and `videored visualize` read it like a video file. A folder has no
frame rate of its own: DAVIS frames are 24 fps, which is the default.

Annotation PNGs: DAVIS 2017 stores palette images whose values are object ids (0 = background,
1..K = objects), DAVIS 2016 binary 0/255 masks; the foreground is any non-zero value, so all
objects together form the object mask. RGB annotations count a pixel as object when any channel
is non-zero.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .decoding import VideoDecodeError, _validate

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DAVIS_FPS = 24.0


def _natural_key(path: Path) -> list:
    """'frame_10' after 'frame_9': digit runs compare as numbers (DAVIS names are zero-padded)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of `folder` in natural name order (empty if none or not a folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)


def is_frame_folder(path: str | os.PathLike) -> bool:
    """True for a directory holding at least one frame image."""
    return bool(frame_files(path))


class FrameFolderVideo:
    """A frame folder opened like a video: frames 0..num_frames-1 in natural name order.

    Every error is a `VideoDecodeError` with `file_problem=True`: no other decoder can help."""

    def __init__(self, path: str | os.PathLike, fps: float = DAVIS_FPS):
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise VideoDecodeError(self.path, "missing frame folder", file_problem=True)
        self.files = frame_files(self.path)
        if not self.files:
            raise VideoDecodeError(self.path, f"no frame images ({', '.join(FRAME_SUFFIXES)})",
                                   file_problem=True)
        self.num_frames = len(self.files)
        self.fps = float(fps)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (T, H, W, 3) uint8 RGB."""
        from PIL import Image

        idx = _validate(self.path, indices, self.num_frames)
        frames: dict[int, np.ndarray] = {}
        for i in dict.fromkeys(idx):  # each file read once
            try:
                with Image.open(self.files[i]) as im:
                    frames[i] = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as e:
                raise VideoDecodeError(self.path, f"cannot read frame {self.files[i].name}: {e}",
                                       file_problem=True) from e
        shapes = {f.shape for f in frames.values()}
        if len(shapes) > 1:
            raise VideoDecodeError(self.path, f"frames differ in size: {sorted(shapes)}",
                                   file_problem=True)
        return np.stack([frames[i] for i in idx])

    def decode_all(self) -> int:
        """Read every frame (nothing kept); returns how many were read. For integrity scans."""
        for start in range(0, self.num_frames, 32):
            self.get_frames(range(start, min(start + 32, self.num_frames)))
        return self.num_frames

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameFolderVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    not scorable). A frame that is not read may lack its annotation.
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


__all__ = ["DAVIS_FPS", "FRAME_SUFFIXES", "FrameFolderVideo", "annotation_folder",
           "frame_files", "has_annotations", "is_frame_folder", "load_annotations"]
