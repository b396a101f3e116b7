"""Model inputs from one file (video or image), taken from the test-mode datasets themselves.

Video: `VideoClipDataset(mode="test", num_spatial_crops=1)` over the file (a one-line list), so
the decode (`videored.data.decoding`), frame indices, short-side resize, centre crop and object masks
are the dataset's own: one definition, nothing repeated here. Both views use the model's own
normalization (`videored.normalization`).
Image: DeiT's evaluation transform (`build_imagenet_transform`).
The uint8 pixels shown in figures are the normalized input mapped back, i.e. the crop the model saw.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from videored.data.image_masks import IMAGE_SUFFIXES  # defined beside the image readers
from videored.normalization import IMAGENET, TIMESFORMER, Normalization, model_normalization

log = logging.getLogger(__name__)


@dataclass
class PreparedInput:
    x: torch.Tensor  # (C, T, H, W) video clip or (C, H, W) image, normalized
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str  # what the model saw, for figure titles
    mask: torch.Tensor | None = None  # (T, H, W) bool object mask of the same crop, if known


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def test_clips(csv_path: str | Path, *, num_frames: int, crop_size: int, sampling_rate: int,
               target_fps: float, backend: str = "auto", return_masks: bool = False,
               normalization: Normalization = TIMESFORMER, sampling: str = "videored"):
    """The test-mode dataset the figures take their clips from: the centred clip, centre crop."""
    from videored.data import VideoClipDataset

    return VideoClipDataset(csv_path, mode="test", num_frames=num_frames,
                            sampling_rate=sampling_rate, target_fps=target_fps,
                            crop_size=crop_size, num_spatial_crops=1, backend=backend,
                            return_masks=return_masks, mean=normalization.mean,
                            std=normalization.std, sampling=sampling)


def prepared_item(dataset, item: dict) -> PreparedInput:
    """A decoded (not failed) item of `test_clips` as a figure input, with its description."""
    c, T = dataset.crop_size, dataset.num_frames
    description = (f"centre {c}x{c} crop (short side -> {c}), centred clip of {T} frames, "
                   f"stride {dataset.sampling_rate} at {dataset.target_fps:g} fps")
    return PreparedInput(x=item["video"], mean=dataset.mean, std=dataset.std,
                         description=description, mask=item.get("mask"))


def load_video_clip(path: str | Path, *, num_frames: int, crop_size: int, sampling_rate: int,
                    target_fps: float, backend: str = "auto",
                    normalization: Normalization = TIMESFORMER,
                    sampling: str = "videored") -> PreparedInput:
    """The centred test clip of `path`, centre crop: x (3, T, crop, crop) normalized.

    When object masks are stored beside the video (`name.masks.npz`), `mask` (T, crop, crop)
    holds those of the same frames, resized and cropped as the dataset does.
    Raises ValueError when the video cannot be decoded (the dataset logs why).
    """
    from videored.data import has_masks

    with tempfile.TemporaryDirectory() as tmp:  # the list is read once, at construction
        listing = Path(tmp) / "one.csv"
        listing.write_text(f"{Path(path).resolve()} 0\n", encoding="utf-8")
        dataset = test_clips(listing, num_frames=num_frames, crop_size=crop_size,
                             sampling_rate=sampling_rate, target_fps=target_fps, backend=backend,
                             return_masks=has_masks(path),
                             normalization=normalization, sampling=sampling)
    item = dataset[0]
    if item["failed"]:
        raise ValueError(f"{path}: could not be decoded (see the warning above)")
    return prepared_item(dataset, item)


def load_image(path: str | Path, *, img_size: int,
               normalization: Normalization = IMAGENET) -> PreparedInput:
    """DeiT's evaluation view of an image file: x (3, img_size, img_size) normalized."""
    from PIL import Image

    from videored.data import build_imagenet_transform

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image: {e}") from e
    mean, std = normalization.mean, normalization.std
    x = build_imagenet_transform(False, img_size, mean=mean, std=std)(image)
    resize = int(img_size / 0.875)
    description = (f"centre {img_size}x{img_size} crop of {image.width}x{image.height} image "
                   f"(short side -> {resize})")
    return PreparedInput(x=x, mean=mean, std=std, description=description)


def prepare_input(path: str | Path, model: torch.nn.Module, *, sampling_rate: int = 32,
                  target_fps: float = 30, backend: str = "auto",
                  sampling: str = "videored") -> PreparedInput:
    """Video or image input for `model` (its frames and input size decide the geometry)."""
    T, gh, _ = model.grid
    size = gh * model.patch_size
    video_model = model.embed.num_frames is not None
    norm = model_normalization(model)  # the weights' own preprocessing
    if is_image_file(path):
        if video_model:
            raise ValueError(f"{path} is an image but the model is a video model ({T} frames)")
        return load_image(path, img_size=size, normalization=norm)
    if not video_model:
        raise ValueError(f"{path} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                         "but the model is an image model")
    return load_video_clip(path, num_frames=T, crop_size=size, sampling_rate=sampling_rate,
                           target_fps=target_fps, backend=backend, normalization=norm,
                           sampling=sampling)


def video_frames_uint8(prepared: PreparedInput) -> np.ndarray:
    """(T, H, W, 3) uint8 pixels of the prepared input (T = 1 for an image)."""
    from .heatmap import to_uint8_frames

    return to_uint8_frames(prepared.x, prepared.mean, prepared.std)


VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"}


def iter_inputs(model: torch.nn.Module, *, path: Path | None = None, csv: Path | None = None,
                limit: int | None = None, sampling_rate: int, target_fps: float,
                backend: str = "decord", sampling: str = "videored"
                ) -> Iterator[tuple[str, PreparedInput | None, int | None, str | None]]:
    """Yield (name, PreparedInput or None, label or None, error or None) per input of
    `videored visualize`: the first `limit` videos of a `path label` list (`csv`, with object
    masks when every listed video has them), or `path`: a video / image file, a frame folder
    (video models; e.g. DAVIS JPEGImages/<video>/), or a folder of them. A bad input is yielded
    with its error (the others still render)."""
    if csv is not None:
        from videored.data import has_masks, iter_video_list

        norm = model_normalization(model)  # the weights' own preprocessing
        with_masks = all(has_masks(row.path) for row in iter_video_list(csv)
                         if row.error is None)
        T, gh, _ = model.grid
        ds = test_clips(csv, num_frames=T, crop_size=gh * model.patch_size,
                        sampling_rate=sampling_rate, target_fps=target_fps, backend=backend,
                        return_masks=with_masks, normalization=norm, sampling=sampling)
        for i in range(len(ds) if limit is None else min(limit, len(ds))):
            item = ds[i]
            if item["failed"]:
                yield item["path"], None, None, "could not be decoded (see the warning above)"
                continue
            yield item["path"], prepared_item(ds, item), item["label"], None
        return
    from videored.data.frame_folder import is_frame_folder

    video_model = model.embed.num_frames is not None
    paths = [path]
    if path.is_dir() and not (video_model and is_frame_folder(path)):
        # a folder of inputs; for a video model, sub-folders of frames are videos too
        paths = sorted(p for p in path.iterdir()
                       if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
                       or (video_model and is_frame_folder(p)))
        if not paths:
            raise FileNotFoundError(f"{path}: no video or image files")
    for p in paths:
        try:
            yield str(p), prepare_input(p, model, sampling_rate=sampling_rate,
                                        target_fps=target_fps, backend=backend,
                                        sampling=sampling), None, None
        except Exception as e:  # a bad file is reported and skipped; the others still render
            yield str(p), None, None, f"{type(e).__name__}: {e}"


__all__ = ["IMAGE_SUFFIXES", "PreparedInput", "VIDEO_SUFFIXES", "is_image_file", "iter_inputs",
           "load_image", "load_video_clip", "prepare_input", "prepared_item", "test_clips",
           "video_frames_uint8"]
