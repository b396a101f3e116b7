"""Spatial video transforms on (C, T, H, W) tensors (and (T, H, W) masks), as plain functions.

pytorchvideo's `transforms` package does not import on current torchvision, so these few are
written here. Random choices are drawn separately (`random_*` helpers) and passed in, so a video
and its object mask get exactly the same geometry.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_float_cthw(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (3, T, H, W) float32 in [0, 1]."""
    return uint8_cthw(frames).float().div_(255.0)


def uint8_cthw(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (3, T, H, W) uint8, a view (no copy). Its strides are
    channels-last per frame, the layout torch's fast uint8 resize kernel reads."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)


def resized_hw(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output (H, W) when the short side becomes `short_side`; the long side is rounded."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def short_side_resize(video: torch.Tensor, short_side: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a (C, T, H, W) video so min(H, W) == `short_side`.

    float: in float. uint8 (the datasets' path: decoded frames are resized before they become
    float): torch's uint8 kernel (fixed point), within one grey level of the float resize and
    ~8x faster on a 340x256 clip (docs/data.md).
    """
    h, w = video.shape[-2:]
    size = resized_hw(h, w, short_side)
    if size == (h, w):
        return video
    if video.dtype == torch.uint8:
        # (T, C, H, W) frames, each resized over its C channels; a uint8_cthw view is
        # channels-last here, which the fast kernel needs. Back to (C, T, H', W').
        frames = F.interpolate(video.transpose(0, 1), size=size, mode="bilinear",
                               align_corners=False, antialias=True)
        return frames.transpose(0, 1)
    # (C, T, H, W) is read by interpolate as (N=C, channels=T, H, W): a per-frame 2-D resize.
    return F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)


def short_side_resize_mask(mask: torch.Tensor, short_side: int) -> torch.Tensor:
    """Nearest-neighbour resize of a (T, H, W) bool mask, same output size as the video.

    "nearest-exact" samples at pixel centres, the same geometry as bilinear with
    align_corners=False, so mask and video stay aligned.
    """
    h, w = mask.shape[-2:]
    size = resized_hw(h, w, short_side)
    if size == (h, w):
        return mask
    out = F.interpolate(mask[None].float(), size=size, mode="nearest-exact")  # (1, T, H', W')
    return out[0] > 0.5


def crop(x: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """Square crop of the last two dims (works for (C, T, H, W) videos and (T, H, W) masks)."""
    h, w = x.shape[-2:]
    if not (0 <= top <= h - size and 0 <= left <= w - size):
        raise ValueError(f"crop {size}x{size} at ({top}, {left}) does not fit in {h}x{w}")
    return x[..., top : top + size, left : left + size]


def spatial_crop_offsets(height: int, width: int, size: int, index: int, num_crops: int) -> tuple[int, int]:
    """(top, left) of deterministic crop `index` of `num_crops` along the long side.

    One crop: the centre. Three crops: left/centre/right for landscape, top/centre/bottom for
    portrait (evenly spaced from one edge to the other for other counts). The short side is
    centred (it equals `size` after the test-time resize, so the offset is 0 there).
    """
    if not 0 <= index < num_crops:
        raise ValueError(f"crop index {index} outside [0, {num_crops})")
    frac = 0.5 if num_crops == 1 else index / (num_crops - 1)
    if height > width:  # portrait: move along H
        return round((height - size) * frac), (width - size) // 2
    return (height - size) // 2, round((width - size) * frac)


def random_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """Uniform random (top, left) of a size x size crop (torch's global RNG)."""
    top = int(torch.randint(0, height - size + 1, ()).item())
    left = int(torch.randint(0, width - size + 1, ()).item())
    return top, left


def random_short_side(scales: Sequence[int]) -> int:
    """Uniform random integer short side in [scales[0], scales[1]] (the train scale jitter)."""
    lo, hi = int(scales[0]), int(scales[1])
    return int(torch.randint(lo, hi + 1, ()).item())


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of the last dim (W)."""
    return x.flip(-1)


def normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(video - mean) / std per channel of a (C, T, H, W) video."""
    m = torch.as_tensor(mean, dtype=video.dtype).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=video.dtype).view(-1, 1, 1, 1)
    return (video - m) / s
