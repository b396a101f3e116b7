"""DAVIS-style sets as test clips with per-frame object masks (`davis_clips`).

A `VideoClipDataset` over the set's frame folders (mode "test", masks on): the same clip sampling
(a folder is read as a 24 fps video), the same short-side resize and crops, the same
normalization as every other video the model is scored on. Videos have no class label (label 0);
only the masks are used. Folder layout and annotation reading: `davis.py`.
"""
from __future__ import annotations

import os
from typing import Any

from .csv_list import ListRow
from .davis import davis_videos
from .video_dataset import VideoClipDataset


def davis_clips(root: str | os.PathLike, *, resolution: str | None = None,
                split_file: str | os.PathLike | None = None, **dataset_kwargs: Any):
    """`VideoClipDataset` (mode "test", `return_masks=True`) over the set's frame folders.

    dataset_kwargs: the clip and crop settings (`num_frames`, `sampling_rate`, `target_fps`,
    `crop_size`, `num_spatial_crops`, `sampling`, `mean` / `std`: the weights' own
    normalization, ...), as for a csv list. Items are dicts with `video`
    (3, T, S, S), `mask` (T, S, S) bool, `failed`, `path`; a folder that cannot be read (missing
    frames or annotations) is an item with `failed=True`, counted by the metric.
    """
    rows = [ListRow(i + 1, str(p), 0) for i, p in enumerate(
        davis_videos(root, resolution=resolution, split_file=split_file))]
    kwargs = {"mode": "test", "return_masks": True, **dataset_kwargs}
    return VideoClipDataset(str(root), rows=rows, **kwargs)


__all__ = ["davis_clips"]
