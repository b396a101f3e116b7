"""A folder of frame images read as one video (DAVIS-style `JPEGImages/<video>/`).

Layout (DAVIS 2016/2017; the resolution level is optional):

    <root>/JPEGImages/[480p/]<video>/<frame>.jpg     the frames, in natural name order
    <root>/Annotations/[480p/]<video>/<frame>.png    one mask per frame, same stem and size

A frame folder is any directory whose files include images; `FrameFolderVideo` gives it the
interface of the decoders in `decoding.py` (`num_frames`, `fps`, `get_frames`), so the video
dataset, its test transforms and `videored visualize` read it like a video file. A folder has no
frame rate of its own: DAVIS frames are 24 fps, which is the default.
The folder's object masks (DAVIS `Annotations/`) are read by `davis.py`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import VideoDecodeError, validate_indices
from .reader import VideoReader

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


class FrameFolderVideo(VideoReader):
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

        idx = validate_indices(self.path, indices, self.num_frames)
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


__all__ = ["DAVIS_FPS", "FRAME_SUFFIXES", "FrameFolderVideo", "frame_files", "is_frame_folder"]
