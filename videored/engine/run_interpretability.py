"""`videored eval --interpretability --masks PATH`: paper Table 1 on a set with object masks.

Every token scorer (entries of the method table, `videored.models.methods`) and every explanation
(`videored.models.explanations`; explanation-only: they explain the dense model and remove no
token) against the object masks, by one of two protocols (`videored.interpretability`):
"benchmark" (default): each map scored as the public ImageNet-Segmentation benchmark does
(bilinear upsampling, min-max, mean threshold; pixel accuracy, mAcc, mIoU, mAP), the token
scorers' maps being their informative scores with dropped tokens 0; "kept": the kept-patch masks
(the token-reduction view), explanations keeping their top patches at the same fraction.

Budget of the token scorers (the method table's, one pass): without a fixed `kept_ratio`, every
budgeted scorer matches the interpreter clip by clip (`run_methods`, by kept ratio or GMACs); in
the kept protocol every explanation keeps the interpreter's kept ratio on that clip; a fixed
`kept_ratio` applies to all of them.

Mask sets (`open_mask_set`), read with the weights' own normalization (`videored.normalization`):
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

from videored.models.explanations import EXPLANATIONS, is_explanation
from videored.normalization import config_normalization
from videored.tables import markdown_table

from .builders import is_video_model, loader_workers

# The paper's token-scorer columns (method-table names), then the explanation rows
# (`models.explanations.EXPLANATIONS`: the benchmark's raw attention, rollout, attention-GradCAM,
# LRP, transformer attribution, then videored's feature GradCAM and the ICCV'21 rule).
TOKEN_SCORERS = ("interpreter", "attention", "random", "temporal_difference")
TABLE1_METHODS = TOKEN_SCORERS + tuple(EXPLANATIONS)
# Paper Table 1 (DeiT-S, ImageNet-Segmentation), percent: the numbers a DeiT-S IA-RED² model
# should land near, and the row of ours each corresponds to. MemNet is not implemented here.
PAPER_TABLE1 = {
    "raw attention": {"pixel_acc": 67.87, "mean_acc": 61.77, "miou": 46.37},
    "MemNet": {"pixel_acc": 52.81, "mean_acc": 53.70, "miou": 34.66},
    "GradCAM": {"pixel_acc": 65.91, "mean_acc": 55.04, "miou": 41.31},
    "LRP": {"pixel_acc": 50.72, "mean_acc": 50.62, "miou": 32.62},
    "ours": {"pixel_acc": 70.36, "mean_acc": 64.86, "miou": 49.42},
}
PAPER_ROWS = {"raw attention": "raw_attention", "GradCAM": "attn_gradcam", "LRP": "lrp",
              "ours": "interpreter"}
METRIC_ROWS = (("pixel_acc", "pixel accuracy"), ("mean_acc", "mAcc"), ("miou", "mIoU"),
               ("map", "mAP"))
# Chefer, Gur & Wolf, CVPR'21, ImageNet-Segmentation (ViT-B/16, their protocol), percent,
# and the row of ours each corresponds to (see docs/evaluation.md).
CHEFER_CVPR21_VIT_B = {
    "rollout": {"pixel_acc": 73.54, "map": 84.76, "miou": 55.42},
    "raw attention": {"pixel_acc": 67.84, "map": 80.24, "miou": 46.37},
    "GradCAM": {"pixel_acc": 64.44, "map": 71.60, "miou": 40.82},
    "LRP": {"pixel_acc": 51.09, "map": 55.68, "miou": 32.89},
    "partial LRP": {"pixel_acc": 76.31, "map": 84.67, "miou": 57.94},
    "transformer attribution": {"pixel_acc": 79.70, "map": 86.03, "miou": 61.95},
}
CHEFER_ROWS = {"rollout": "rollout", "raw attention": "raw_attention", "GradCAM": "attn_gradcam",
               "LRP": "lrp", "transformer attribution": "transformer_attribution"}
PROTOCOL_NOTES = {
    "benchmark": "the public ImageNet-Segmentation benchmark's protocol (Chefer et al. CVPR'21, "
                 "imagenet_seg_eval.py): each frame's patch map upsampled bilinearly x patch "
                 "size, min-max normalised, thresholded at its mean; mAP of the soft map. Token "
                 "scorers are scored on their informative scores, dropped tokens 0",
    "kept": "kept patches (the token-reduction view): each method's kept-patch mask is the "
            "predicted object; explanations keep their top patches at the same fraction as "
            "the token scorers; no mAP",
}


def open_mask_set(path: str | Path, cfg: DictConfig) -> Dataset:
    """The mask set at `path` in the geometry of `cfg.model`, normalized as `cfg.data.mean` /
    `std` (resolved from the weights first: `resolve_normalization`); see the module docstring."""
    path = Path(path)
    video = is_video_model(cfg.model.name)
    size = cfg.model.img_size
    d = cfg.data
    norm = config_normalization(cfg)
    clip = dict(num_frames=cfg.model.num_frames, sampling_rate=d.sampling_rate,
                target_fps=d.target_fps, crop_size=size, num_spatial_crops=1, backend=d.decoder,
                sampling=d.sampling, mean=norm.mean, std=norm.std)
    if path.suffix.lower() == ".mat":
        kind = "ImageNet-Segmentation file"
        if not video:
            from videored.data.imagenet_seg import ImageNetSegmentation

            return ImageNetSegmentation(path, img_size=size, normalization=norm)
    elif path.is_dir() and (path / "JPEGImages").is_dir():
        kind = "DAVIS-style folder"
        if video:
            from videored.data.davis_set import davis_clips

            return davis_clips(path, **clip)
    elif path.is_dir() and (path / "images").is_dir():
        kind = "images/ + masks/ folder"
        if not video:
            from videored.data.image_masks import ImageMaskFolder

            return ImageMaskFolder(path, img_size=size, normalization=norm)
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
                         kept_ratio: Optional[float] = None, match: str = "ratio",
                         protocol: str = "benchmark",
                         dense_checkpoint: Optional[str | Path] = None,
                         batch_size: Optional[int] = None, num_workers: Optional[int] = None,
                         limit: Optional[int] = None, device: Optional[str] = None
                         ) -> dict[str, Any]:
    """Table 1 metrics of `methods` on the mask set `masks`; writes results.json / results.md.

    The interpreter runs on `checkpoint`, every other method on `dense_checkpoint` (default: the
    same weights). protocol: "benchmark" or "kept" (module docstring). kept_ratio None:
    budgeted scorers match the interpreter clip by clip (by `match`), explanations (kept
    protocol) keep its kept ratio on each clip; else the fixed fraction of patches reaching the
    last block for all of them (the method table's budget, `run_methods`).
    """
    import torch

    from videored.interpretability import (PROTOCOLS, canonical_methods, interpretability_table,
                                           needs_budget)
    from videored.normalization import resolve_normalization

    from .distributed import pick_device
    from .run_eval import load_for_eval

    device = torch.device(device) if device else pick_device(cfg.run.device, 0)  # one process
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    methods = canonical_methods(methods)
    budgeted = needs_budget(methods, protocol)
    if "interpreter" not in methods and kept_ratio is None and budgeted:
        raise ValueError(f"{', '.join(budgeted)} need a kept ratio: evaluate 'interpreter' too "
                         "(they match it) or give --kept-ratio")
    model = load_for_eval(cfg, checkpoint, "interpreter" in methods).to(device).eval()
    dense = model if dense_checkpoint is None else load_for_eval(
        cfg, dense_checkpoint, need_interpreter=False).to(device).eval()
    resolve_normalization(cfg, model, dense)  # the weights' own unless the config overrides it
    dataset = open_mask_set(masks, cfg)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    table = interpretability_table(
        dense, dataset, methods, kept_ratio, match=match, protocol=protocol,
        reference_model=model,
        batch_size=batch_size or cfg.data.batch_size,
        num_workers=loader_workers(cfg, num_workers), device=device,
        progress=lambda msg: print(f"[interpretability] {msg}", flush=True))
    rows = {m: {**table[m], "explanation_only": is_explanation(m),
                "weights": str(checkpoint if m == "interpreter" or dense is model
                               else dense_checkpoint)} for m in methods}
    first = next(iter(table.values()), {"samples": 0, "failed": 0})
    summary = {"masks": str(masks), "checkpoint": str(checkpoint),
               "dense_checkpoint": str(dense_checkpoint or checkpoint),
               "samples": first["samples"], "failed": first["failed"],
               "protocol": protocol,
               "budget": ({"match": "fixed", "kept_ratio": kept_ratio} if kept_ratio is not None
                          else {"match": match, "reference": "interpreter"}),
               "normalization": model.normalization.to_dict(),
               "device": str(device), "methods": rows}
    if Path(masks).suffix.lower() == ".mat":
        summary["paper_table1_deit_s"] = PAPER_TABLE1
        if protocol == "benchmark":  # their numbers are by this protocol only
            summary["chefer_cvpr21_vit_b"] = CHEFER_CVPR21_VIT_B
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(table1_markdown(summary))
    return summary


def budget_note(budget: dict[str, Any], protocol: str = "kept") -> str:
    """One line saying at which budget the scorers and explanations ran."""
    if budget["match"] == "fixed":
        return f"every token scorer at kept ratio {budget['kept_ratio']:g} (fixed)" + (
            ", explanations keep the same fraction" if protocol == "kept" else "")
    what = "kept ratio" if budget["match"] == "ratio" else "GMACs"
    return (f"baselines matched to the interpreter clip by clip by {what}" +
            ("; explanations keep the interpreter's kept ratio on each clip"
             if protocol == "kept" else ""))


def _reference_table(title: str, table: dict[str, dict], ours: dict[str, str]) -> str:
    cols = [("metric", title, "s")] + [(m, f"{m} (= {ours[m]})" if m in ours else m, ".2f")
                                       for m in table]
    rows = [{"metric": label, **{m: table[m][key] for m in table}}
            for key, label in METRIC_ROWS if any(key in v for v in table.values())]
    return markdown_table(rows, cols)


def table1_markdown(summary: dict[str, Any]) -> str:
    """Paper Table 1 layout: one row per metric, one column per method (percent)."""
    methods = summary["methods"]
    protocol = summary.get("protocol", "kept")

    def header(m: str) -> str:
        return m + (" (ours)" if m == "interpreter" else "") + (
            " †" if methods[m]["explanation_only"] else "")

    cols = [("metric", "metric", "s")] + [(m, header(m), ".2f") for m in methods]
    rows = [{"metric": label, **{m: methods[m][key] for m in methods}}
            for key, label in METRIC_ROWS if key != "map" or protocol == "benchmark"]
    rows.append({"metric": "kept %", **{m: 100 * methods[m]["kept"] for m in methods}})
    dagger = ("† explanation-only: explains the dense model's prediction and removes no token" +
              ("; its top patches are kept at the same fraction as the token scorers."
               if protocol == "kept" else "; scored on its relevance map (no kept fraction)."))
    lines = [f"Mask set `{summary['masks']}`: {summary['samples']} items scored, "
             f"{summary['failed']} unreadable (skipped, counted). Device: {summary['device']}.",
             "", f"Protocol: **{protocol}**: {PROTOCOL_NOTES[protocol]}.",
             "", markdown_table(rows, cols), "", dagger,
             "", f"Budget: {budget_note(summary['budget'], protocol)}."]
    if "paper_table1_deit_s" in summary:
        lines += ["", _reference_table("paper Table 1 (DeiT-S)", summary["paper_table1_deit_s"],
                                       PAPER_ROWS)]
    if "chefer_cvpr21_vit_b" in summary:
        lines += ["", _reference_table("Chefer et al. CVPR'21 (ViT-B, ImageNet-Seg.)",
                                       summary["chefer_cvpr21_vit_b"], CHEFER_ROWS)]
    return "\n".join(lines) + "\n"


__all__ = ["CHEFER_CVPR21_VIT_B", "PAPER_TABLE1", "PROTOCOL_NOTES", "TABLE1_METHODS",
           "TOKEN_SCORERS", "budget_note", "open_mask_set", "run_interpretability",
           "table1_markdown"]
