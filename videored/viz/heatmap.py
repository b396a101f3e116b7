"""Pure rendering: patch scores -> per-frame heatmaps, overlays and greyed-out dropped patches.

Everything here is a plain function on numpy arrays (tensors are accepted and converted), so the
pictures can be checked pixel by pixel. No matplotlib state is touched: colour maps are read as a
256-entry lookup table.

Patch order is the model's (`videored.models.embedding`): patch n of a clip with grid
(T, gh, gw) is frame n // (gh*gw), row (n % (gh*gw)) // gw, col n % gw, i.e. a C-order reshape.

Upsampling: "nearest" (default) gives every patch_size x patch_size block its patch's value,
which is exactly what the model decided on; "bilinear" (patch centres, align_corners=False)
gives a smooth map for presentation only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

UPSAMPLE_MODES = ("nearest", "bilinear")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def patch_grid(values, grid: tuple[int, int, int]) -> np.ndarray:
    """Per-patch values (N,) or (B, N) -> (T, gh, gw) or (B, T, gh, gw), in the model's order."""
    values = _numpy(values)
    T, gh, gw = grid
    if values.shape[-1] != T * gh * gw:
        raise ValueError(f"{values.shape[-1]} patch values do not fit the grid {grid} "
                         f"({T * gh * gw} patches)")
    return values.reshape(*values.shape[:-1], T, gh, gw)


def upsample_patches(grid_values, patch_size: int, mode: str = "nearest") -> np.ndarray:
    """(..., gh, gw) patch values -> (..., gh*patch_size, gw*patch_size) float32 pixel map."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsampling mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    values = _numpy(grid_values).astype(np.float32)
    if mode == "nearest":
        return values.repeat(patch_size, axis=-2).repeat(patch_size, axis=-1)
    lead, (gh, gw) = values.shape[:-2], values.shape[-2:]
    flat = torch.from_numpy(values.reshape(1, -1, gh, gw))  # (1, M, gh, gw): one map per channel
    out = F.interpolate(flat, size=(gh * patch_size, gw * patch_size), mode="bilinear",
                        align_corners=False)
    return out.numpy().reshape(*lead, gh * patch_size, gw * patch_size)


def kept_ratio_per_frame(keep_grid) -> np.ndarray:
    """(T, gh, gw) bool keep decisions -> (T,) fraction of each frame's patches kept."""
    keep = _numpy(keep_grid).astype(bool)
    return keep.reshape(keep.shape[0], -1).mean(axis=1)


def to_uint8_frames(video, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the input normalization: (C, T, H, W) or image (C, H, W) -> (T, H, W, 3) uint8.

    This shows exactly the crop the model saw (same resize, crop and frames).
    """
    x = _numpy(video).astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]  # (C, 1, H, W)
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, T, H, W) video or (3, H, W) image, got {x.shape}")
    m = np.asarray(mean, np.float32).reshape(3, 1, 1, 1)
    s = np.asarray(std, np.float32).reshape(3, 1, 1, 1)
    pixels = np.clip(np.rint((x * s + m) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 2, 3, 0))  # (T, H, W, 3)


def colormap_lut(cmap: str = "jet") -> np.ndarray:
    """(256, 3) uint8 colours of a matplotlib colour map (read only, no global state)."""
    import matplotlib  # lazy: importing matplotlib (not pyplot) selects no backend

    table = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.rint(table * 255.0).astype(np.uint8)


def colorize(values, cmap: str = "jet", lut: np.ndarray | None = None) -> np.ndarray:
    """Values in [0, 1] (any shape) -> (..., 3) uint8 colours; value v uses entry round(255 v)."""
    lut = colormap_lut(cmap) if lut is None else lut
    idx = np.clip(np.rint(_numpy(values).astype(np.float32) * 255.0), 0, 255).astype(np.int64)
    return lut[idx]


def overlay_heatmap(frames, heat, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend colourized `heat` (T, H, W) in [0, 1] over `frames` (T, H, W, 3) uint8.

    out = round((1 - alpha) * frame + alpha * colour), uint8.
    """
    frames = _numpy(frames)
    colour = colorize(heat, cmap).astype(np.float32)
    if colour.shape != frames.shape:
        raise ValueError(f"heatmap {colour.shape[:-1]} does not match frames {frames.shape[:-1]}")
    out = (1.0 - alpha) * frames.astype(np.float32) + alpha * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def grey_out(frames, keep_pixels, strength: float = 0.8, grey: int = 128) -> np.ndarray:
    """Fade dropped pixels towards grey: where not kept, round((1 - s) * frame + s * grey).

    frames (T, H, W, 3) uint8, keep_pixels (T, H, W) bool (upsample the patch keep mask with
    `upsample_patches(..., mode="nearest")`). Kept pixels are unchanged.
    """
    frames = _numpy(frames)
    keep = _numpy(keep_pixels).astype(bool)
    if keep.shape != frames.shape[:-1]:
        raise ValueError(f"keep mask {keep.shape} does not match frames {frames.shape[:-1]}")
    faded = np.rint((1.0 - strength) * frames.astype(np.float32) + strength * grey)
    return np.where(keep[..., None], frames, faded.astype(np.uint8))


def tint(frames, where_pixels, colour: Sequence[int], alpha: float = 0.6) -> np.ndarray:
    """frames (T, H, W, 3) uint8 blended towards `colour` where `where_pixels` (T, H, W) is True
    (alpha of the colour), unchanged elsewhere: a mark that keeps the picture visible."""
    frames = _numpy(frames)
    where = _numpy(where_pixels).astype(bool)
    mixed = np.rint((1.0 - alpha) * frames.astype(np.float32)
                    + alpha * np.asarray(colour, np.float32))
    return np.where(where[..., None], mixed.astype(np.uint8), frames)


def mask_outline(mask) -> np.ndarray:
    """(T, H, W) bool object mask -> (T, H, W) bool: object pixels with a 4-neighbour outside it
    (pixels beyond the frame count as outside)."""
    m = _numpy(mask).astype(bool)
    pad = np.pad(m, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    interior = pad[:, :-2, 1:-1] & pad[:, 2:, 1:-1] & pad[:, 1:-1, :-2] & pad[:, 1:-1, 2:]
    return m & ~interior


def paint(frames, where, colour: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A copy of frames (T, H, W, 3) uint8 with `colour` where `where` (T, H, W) is True."""
    out = _numpy(frames).copy()
    out[_numpy(where).astype(bool)] = np.asarray(colour, np.uint8)
    return out


def group_mean_colours(frames, group_grid, patch_size: int) -> np.ndarray:
    """Paint every pixel with the mean colour of its merged group (ToMe's visualization).

    frames (T, H, W, 3) uint8; group_grid (T, gh, gw) int: the token each patch was merged into
    (`ReductionOutput.source` through `patch_grid`). A group may span frames (JointST merges
    across time): its mean is over all its pixels in every frame. -> (T, H, W, 3) uint8.
    """
    frames = _numpy(frames)
    ids = upsample_patches(group_grid, patch_size).astype(np.int64)  # (T, H, W)
    if ids.shape != frames.shape[:-1]:
        raise ValueError(f"groups {ids.shape} do not match frames {frames.shape[:-1]}")
    flat = ids.reshape(-1)
    counts = np.bincount(flat)
    sums = np.stack([np.bincount(flat, weights=frames[..., c].reshape(-1).astype(np.float64),
                                 minlength=len(counts)) for c in range(3)], axis=1)  # (G, 3)
    means = np.rint(sums / np.maximum(counts, 1)[:, None]).astype(np.uint8)
    return means[ids]


def group_edges(group_grid, patch_size: int) -> np.ndarray:
    """(T, gh, gw) int groups -> (T, H, W) bool: the pixels on a patch side whose neighbour
    patch (same frame) is in another group, i.e. the outlines of the merged regions."""
    g = _numpy(group_grid)
    px = upsample_patches(g, patch_size).astype(np.int64)  # (T, H, W)
    edge = np.zeros(px.shape, dtype=bool)
    edge[:, 1:, :] |= px[:, 1:, :] != px[:, :-1, :]
    edge[:, :-1, :] |= px[:, 1:, :] != px[:, :-1, :]
    edge[:, :, 1:] |= px[:, :, 1:] != px[:, :, :-1]
    edge[:, :, :-1] |= px[:, :, 1:] != px[:, :, :-1]
    return edge


def render_overlays(frames, scores_grid, keep_grid, patch_size: int, *, smooth: bool = False,
                    alpha: float = 0.5, cmap: str = "jet") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three pictures of a clip: (heatmap overlay, dropped-greyed, heatmap-on-kept), each
    (T, H, W, 3) uint8. scores_grid (T, gh, gw) in [0, 1], keep_grid (T, gh, gw) bool.
    """
    heat = upsample_patches(scores_grid, patch_size, "bilinear" if smooth else "nearest")
    keep_px = upsample_patches(keep_grid, patch_size, "nearest") > 0.5
    heated = overlay_heatmap(frames, np.clip(heat, 0.0, 1.0), alpha, cmap)
    return heated, grey_out(frames, keep_px), grey_out(heated, keep_px)


__all__ = [
    "UPSAMPLE_MODES", "colorize", "colormap_lut", "grey_out", "group_edges",
    "group_mean_colours", "kept_ratio_per_frame",
    "mask_outline", "overlay_heatmap", "paint", "tint", "patch_grid", "render_overlays", "to_uint8_frames", "upsample_patches",
]
