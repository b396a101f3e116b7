"""Model inputs from one file (video or image), prepared exactly as the test-mode datasets do.

Video: the centred clip of `VideoClipDataset(mode="test")` (same `sampling` functions, so the
same frame indices), the short side resized to the model's input size and the centre crop, with
the model's own normalization (`videored.normalization`); works for any size, orientation and
frame rate decord/PyAV can read (a video decord fails on is decoded again with PyAV, which gives the same frames).
Image: DeiT's evaluation transform (`build_imagenet_transform`), the model's own normalization.
The uint8 pixels shown in figures are the normalized input mapped back, i.e. the crop the model saw.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from videored.normalization import IMAGENET, TIMESFORMER, Normalization, model_normalization

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class PreparedInput:
    x: torch.Tensor  # (C, T, H, W) video clip or (C, H, W) image, normalized
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str  # what the model saw, for figure titles
    mask: torch.Tensor | None = None  # (T, H, W) bool object mask of the same crop, if known


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_video_clip(path: str | Path, *, num_frames: int, crop_size: int, sampling_rate: int,
                    target_fps: float, backend: str = "decord",
                    normalization: Normalization = TIMESFORMER,
                    sampling: str = "videored") -> PreparedInput:
    """The centred test clip of `path`, centre crop: x (3, T, crop, crop) normalized.

    When object masks are stored beside the video (`name.masks.npz`), `mask` holds those of the
    same frames with the same resize and crop (nearest neighbour), as the dataset does.
    """
    from videored.data import VideoDecodeError, load_masks, mask_path, open_video
    from videored.data import transforms as T
    from videored.data.sampling import frame_indices

    mean, std = normalization.mean, normalization.std

    def decode(backend: str):
        with open_video(path, backend) as video:
            idx = frame_indices(sampling, video.num_frames, video.fps, num_frames=num_frames,
                                sampling_rate=sampling_rate, target_fps=target_fps, train=False)
            return video.get_frames(idx), idx, video.fps, video.num_frames  # (T, H, W, 3) uint8

    try:
        frames, idx, fps, length = decode(backend)
    except VideoDecodeError as e:
        if backend != "decord":
            raise
        # decord 0.6 fails on some frame widths (e.g. 48 or 72 px: "DECORDArrayCopyFromTo: The
        # size must exactly match"); PyAV decodes the same frames (tests in tests/test_data*).
        log.warning("%s: decord failed (%s); decoding with PyAV", path, e.reason)
        frames, idx, fps, length = decode("pyav")
        backend = "pyav"
    h, w = frames.shape[1:3]
    clip = T.short_side_resize(T.to_float_cthw(frames), crop_size)  # (3, T, H', W')
    top, left = T.spatial_crop_offsets(clip.shape[-2], clip.shape[-1], crop_size, 0, 1)
    x = T.normalize(T.crop(clip, top, left, crop_size), mean, std).contiguous()
    description = (f"centre {crop_size}x{crop_size} crop of {w}x{h} video (short side -> "
                   f"{crop_size}), frames {idx.tolist()} of {length} at {fps:g} fps"
                   + (" (PyAV)" if backend == "pyav" else ""))
    mask = None
    if mask_path(path).is_file():
        masks = load_masks(path)  # (F, H, W)
        if masks.shape[0] < length or masks.shape[1:] != (h, w):
            raise ValueError(f"{mask_path(path)}: masks {masks.shape} do not match the video "
                             f"({length}, {h}, {w})")
        mask = T.short_side_resize_mask(torch.from_numpy(masks[idx]), crop_size)
        mask = T.crop(mask, top, left, crop_size).contiguous()
    return PreparedInput(x=x, mean=mean, std=std, description=description, mask=mask)


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
                  target_fps: float = 30, backend: str = "decord",
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


__all__ = ["IMAGE_SUFFIXES", "PreparedInput", "is_image_file", "load_image", "load_video_clip",
           "prepare_input", "video_frames_uint8"]
