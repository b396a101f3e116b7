"""Per-frame object masks stored beside a video: `name.mp4` -> `name.masks.npz`.

A frame folder (`frame_folder.py`, e.g. DAVIS `JPEGImages/<video>/`) has its masks in the
matching `Annotations/<video>/` folder instead (read by `davis.py`); `has_masks` / `load_masks`
read either.

The npz holds one array, key `masks`, shape (num_frames, H, W), dtype bool, frame i of the mask
belonging to frame i of the video (same H and W as the decoded frames).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def mask_path(video_path: str | os.PathLike) -> Path:
    """Where the masks of `video_path` live."""
    return Path(video_path).with_suffix(".masks.npz")


def save_masks(video_path: str | os.PathLike, masks: np.ndarray) -> Path:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != np.bool_:
        raise ValueError(f"masks must be (T, H, W) bool, got {masks.shape} {masks.dtype}")
    path = mask_path(video_path)
    np.savez_compressed(path, masks=masks)
    return path


def has_masks(video_path: str | os.PathLike) -> bool:
    """True when `video_path` has object masks: `name.masks.npz`, or DAVIS-style annotations."""
    from .davis import has_annotations

    if os.path.isdir(video_path):
        return has_annotations(video_path)
    return mask_path(video_path).is_file()


def load_masks(video_path: str | os.PathLike, frames=None) -> np.ndarray:
    """(T, H, W) bool masks of `video_path`; FileNotFoundError / KeyError name the file.
    frames: only these frame indices (a frame folder then reads only their annotations)."""
    if os.path.isdir(video_path):  # a frame folder: DAVIS-style Annotations/
        from .davis import load_annotations

        return load_annotations(video_path, frames)
    path = mask_path(video_path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file missing: {path}")
    with np.load(path) as data:
        if "masks" not in data:
            raise KeyError(f"{path}: no 'masks' array (found {list(data.keys())})")
        masks = data["masks"]
    if masks.ndim != 3:
        raise ValueError(f"{path}: masks must be (T, H, W), got shape {masks.shape}")
    masks = masks.astype(bool, copy=False)
    return masks if frames is None else masks[np.asarray(frames)]
