"""Redundancy heatmaps (paper Fig. 3 / 4 / 8) and the interpretability metric (paper Table 1).

- `heatmap`: pure numpy rendering (scores -> upsampled heatmaps, overlays, greyed-out patches)
- `figures`: PNG / GIF layouts (matplotlib's Agg canvas, used inside the functions only)
- `segmentation`: pixel accuracy, mean accuracy, mIoU of kept-patch masks vs object masks
- `inputs`: one video or image file prepared exactly as the test-mode datasets do
- `image_masks`: an images/ + masks/ folder for the image metric
Importing this package has no side effects.
"""
from .heatmap import (colorize, grey_out, kept_ratio_per_frame, overlay_heatmap, patch_grid,
                      render_overlays, to_uint8_frames, upsample_patches)
from .segmentation import (METHODS, confusion_counts, interpretability_table, keep_to_pixels,
                           matched_keep_ratio, method_keep, segmentation_metrics)

__all__ = [
    "METHODS", "colorize", "confusion_counts", "grey_out", "interpretability_table",
    "keep_to_pixels", "kept_ratio_per_frame", "matched_keep_ratio", "method_keep",
    "overlay_heatmap", "patch_grid", "render_overlays", "segmentation_metrics",
    "to_uint8_frames", "upsample_patches",
]
