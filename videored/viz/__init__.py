"""Redundancy heatmaps (paper Fig. 3 / 4 / 8) and the interpretability metric (paper Table 1).

- `heatmap`: pure numpy rendering (scores -> upsampled heatmaps, overlays, greyed-out patches)
- `figures`: PNG / GIF layouts (matplotlib's Agg canvas, used inside the functions only)
- the interpretability metric (pixel accuracy, mean accuracy, mIoU of kept-patch masks vs object
  masks) lives in `videored.interpretability`, beside evaluation, which uses it too
- `inputs`: one video or image file prepared exactly as the test-mode datasets do
Importing this package has no side effects.
"""
from .heatmap import (colorize, grey_out, kept_ratio_per_frame, overlay_heatmap, patch_grid,
                      render_overlays, to_uint8_frames, upsample_patches)

__all__ = [
    "colorize", "grey_out", "kept_ratio_per_frame", "overlay_heatmap", "patch_grid",
    "render_overlays", "to_uint8_frames", "upsample_patches",
]
