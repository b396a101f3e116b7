"""`videored eval --interpretability --masks PATH`: paper Table 1 on a set with object masks.

The kept-patch mask of every token scorer, and the top patches of every explanation baseline
(`videored.viz.explanations`, explanation-only: they explain the dense model and remove no
token), against the object masks: pixel accuracy, mean accuracy, mIoU (`viz.segmentation`).

Mask sets (`open_mask_set`):
- `gtsegs_ijcv.mat`: ImageNet-Segmentation, 4,276 images (paper Table 1), image models
- a DAVIS-style folder (`JPEGImages/` + `Annotations/`): video models, test clips of the folders
- an `images/` + `masks/` folder: image models
- a `path label` csv of videos with `name.masks.npz` beside them (the synthetic set): video models

Writes `results.json` and `results.md` (metrics as rows and methods as columns, as paper Table 1).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig
from torch.utils.data import Dataset, Subset

from videored.tables import markdown_table
from videored.viz.explanations import EXPLANATIONS

from .builders import is_video_model

TOKEN_SCORERS = ("interpreter", "attention", "random", "temporal_difference")
TABLE1_METHODS = TOKEN_SCORERS + EXPLANATIONS
# Paper Table 1 (DeiT-S, ImageNet-Segmentation), percent: the numbers a DeiT-S IA-RED² model
# should land near. MemNet and LRP are not implemented here.
PAPER_TABLE1 = {
    "raw attention": {"pixel_acc": 67.87, "mean_acc": 61.77, "miou": 46.37},
    "MemNet": {"pixel_acc": 52.81, "mean_acc": 53.70, "miou": 34.66},
    "GradCAM": {"pixel_acc": 65.91, "mean_acc": 55.04, "miou": 41.31},
    "LRP": {"pixel_acc": 50.72, "mean_acc": 50.62, "miou": 32.62},
    "ours": {"pixel_acc": 70.36, "mean_acc": 64.86, "miou": 49.42},
}
METRIC_ROWS = (("pixel_acc", "pixel accuracy"), ("mean_acc", "mAcc"), ("miou", "mIoU"))


def open_mask_set(path: str | Path, cfg: DictConfig) -> Dataset:
    """The mask set at `path` in the geometry of `cfg.model` (see the module docstring)."""
    path = Path(path)
    video = is_video_model(cfg.model.name)
    size = cfg.model.img_size
    d = cfg.data
    clip = dict(num_frames=cfg.model.num_frames, sampling_rate=d.sampling_rate,
                target_fps=d.target_fps, crop_size=size, num_spatial_crops=1, backend=d.backend)
    if path.suffix.lower() == ".mat":
        kind = "ImageNet-Segmentation file"
        if not video:
            from videored.data.imagenet_seg import ImageNetSegmentation

            return ImageNetSegmentation(path, img_size=size)
    elif path.is_dir() and (path / "JPEGImages").is_dir():
        kind = "DAVIS-style folder"
        if video:
            from videored.data.davis import davis_clips

            return davis_clips(path, **clip)
    elif path.is_dir() and (path / "images").is_dir():
        kind = "images/ + masks/ folder"
        if not video:
            from videored.viz.image_masks import ImageMaskFolder

            return ImageMaskFolder(path, img_size=size)
    elif path.suffix.lower() == ".csv":
        kind = "video list"
        if video:
            from videored.data import VideoClipDataset

            return VideoClipDataset(path, mode="test", return_masks=True, **clip)
    else:
        raise FileNotFoundError(f"{path}: not a mask set (expected gtsegs_ijcv.mat, a folder with "
                                "JPEGImages/ + Annotations/ or images/ + masks/, or a .csv list)")
    model_kind = "a video model" if video else "an image model"
    raise ValueError(f"{path} is a {kind}, which does not fit {model_kind} ({cfg.model.name})")


def run_interpretability(cfg: DictConfig, *, checkpoint: str | Path, masks: str | Path,
                         out_dir: str | Path, methods: list[str] = list(TABLE1_METHODS),
                         keep_ratio: Optional[float] = None,
                         dense_checkpoint: Optional[str | Path] = None,
                         batch_size: Optional[int] = None, num_workers: Optional[int] = None,
                         limit: Optional[int] = None, device: Optional[str] = None
                         ) -> dict[str, Any]:
    """Table 1 metrics of `methods` on the mask set `masks`; writes results.json / results.md.

    The interpreter runs on `checkpoint`, every other method on `dense_checkpoint` (default: the
    same weights). Without `keep_ratio`, token scorers and explanations keep the interpreter's
    mean final kept fraction f on this set (baselines f^(1/D) per selection, explanations f in
    their one selection); `keep_ratio` is a per-selection ratio r (explanations keep r^D).
    """
    import torch

    from videored.viz.segmentation import interpretability_table, matched_keep_ratio

    from .run_eval import load_for_eval

    from .distributed import pick_device

    device = torch.device(device) if device else pick_device(cfg.run.device, 0)  # one process
    if "interpreter" not in methods and keep_ratio is None and methods:
        raise ValueError("without 'interpreter' in the methods a --keep-ratio is needed")
    model = load_for_eval(cfg, checkpoint, "interpreter" in methods).to(device).eval()
    dense = model if dense_checkpoint is None else load_for_eval(
        cfg, dense_checkpoint, need_interpreter=False).to(device).eval()
    dataset = open_mask_set(masks, cfg)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    loader = dict(batch_size=batch_size or cfg.data.batch_size,
                  num_workers=cfg.data.num_workers if num_workers is None else num_workers,
                  device=device, progress=lambda msg: print(f"[interpretability] {msg}",
                                                            flush=True))
    table: dict[str, dict] = {}
    if "interpreter" in methods:
        table.update(interpretability_table(model, dataset, ["interpreter"], None, **loader))
    ratio = keep_ratio if keep_ratio is not None else matched_keep_ratio(
        table["interpreter"]["kept"], model.groups)
    others = [m for m in methods if m != "interpreter"]
    if others:
        table.update(interpretability_table(dense, dataset, others, ratio, **loader))
    rows = {m: {**table[m], "explanation_only": m in EXPLANATIONS,
                "weights": str(checkpoint if m == "interpreter" or dense is model
                               else dense_checkpoint)} for m in methods}
    first = next(iter(table.values()), {"samples": 0, "failed": 0})
    summary = {"masks": str(masks), "checkpoint": str(checkpoint),
               "dense_checkpoint": str(dense_checkpoint or checkpoint),
               "samples": first["samples"], "failed": first["failed"],
               "keep_ratio_setting": keep_ratio, "baseline_keep_ratio": ratio,
               "device": str(device), "methods": rows}
    if Path(masks).suffix.lower() == ".mat":
        summary["paper_table1_deit_s"] = PAPER_TABLE1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(table1_markdown(summary))
    return summary


def table1_markdown(summary: dict[str, Any]) -> str:
    """Paper Table 1 layout: one row per metric, one column per method (percent)."""
    methods = summary["methods"]

    def header(m: str) -> str:
        return m + (" (ours)" if m == "interpreter" else "") + (
            " †" if methods[m]["explanation_only"] else "")

    cols = [("metric", "metric", "s")] + [(m, header(m), ".2f") for m in methods]
    rows = [{"metric": label, **{m: methods[m][key] for m in methods}}
            for key, label in METRIC_ROWS]
    rows.append({"metric": "kept %", **{m: 100 * methods[m]["kept"] for m in methods}})
    lines = [f"Mask set `{summary['masks']}`: {summary['samples']} items scored, "
             f"{summary['failed']} unreadable (skipped, counted). Device: {summary['device']}.",
             "", markdown_table(rows, cols), "",
             "† explanation-only: explains the dense model's prediction and removes no token; "
             "its top patches are kept at the same fraction as the token scorers."]
    if "paper_table1_deit_s" in summary:
        paper = summary["paper_table1_deit_s"]
        pcols = [("metric", "paper Table 1 (DeiT-S)", "s")] + [(m, m, ".2f") for m in paper]
        prow = [{"metric": label, **{m: paper[m][key] for m in paper}}
                for key, label in METRIC_ROWS]
        lines += ["", markdown_table(prow, pcols)]
    return "\n".join(lines) + "\n"


__all__ = ["PAPER_TABLE1", "TABLE1_METHODS", "TOKEN_SCORERS", "open_mask_set",
           "run_interpretability", "table1_markdown"]
