"""Interpretability metric (paper Table 1): the kept-patch mask as a weakly supervised segmentation.

The keep decisions of a method, upsampled to pixels (each patch_size x patch_size block takes its
patch's decision), are the predicted "object" mask; the ground-truth object mask is the target.
Two classes (background = 0, object = 1). From the 2x2 confusion counts C[target, predicted]:

    pixel_acc = (TP + TN) / all pixels
    mean_acc  = mean over the two classes of per-class accuracy
              = (TP / (TP + FN) + TN / (TN + FP)) / 2
    miou      = mean over the two classes of IoU
              = (TP / (TP + FP + FN) + TN / (TN + FN + FP)) / 2

The counts are accumulated over every pixel of every frame of the whole dataset and the ratios
taken once at the end (not averages of per-frame ratios): large and small objects weigh by their
pixels, and frames where a class is absent do not produce 0/0. A class with no pixels in either
mask over the whole dataset is left out of the means (nan-mean). Values are percentages, as in the
paper's Table 1.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from videored.models.methods import EXPLANATIONS, METHODS, get_method
from videored.normalization import model_input
from videored.viz.explanations import run_with_explanations

log = logging.getLogger(__name__)



def confusion_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(2, 2) int64 counts C[t, p] of pixels with target class t and predicted class p.

    pred, target: bool tensors of the same shape (True = object).
    """
    if pred.shape != target.shape:
        raise ValueError(f"predicted mask {tuple(pred.shape)} and object mask "
                         f"{tuple(target.shape)} differ in shape")
    index = target.reshape(-1).long() * 2 + pred.reshape(-1).long()  # 0 tn, 1 fp, 2 fn, 3 tp
    return torch.bincount(index, minlength=4).view(2, 2).cpu()


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """{"pixel_acc", "mean_acc", "miou"} in percent from (2, 2) counts C[target, predicted]."""
    c = confusion.double()
    diag = c.diagonal()
    per_class_total = c.sum(1)  # target pixels of each class
    union = c.sum(1) + c.sum(0) - diag
    acc = (diag / per_class_total).numpy()  # 0/0 = nan where a class has no target pixels
    iou = (diag / union).numpy()  # nan where a class is absent from both masks
    total = float(c.sum())
    return {
        "pixel_acc": 100.0 * float(diag.sum()) / total if total else float("nan"),
        "mean_acc": 100.0 * float(np.nanmean(acc)) if not np.isnan(acc).all() else float("nan"),
        "miou": 100.0 * float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan"),
    }


def keep_to_pixels(keep: torch.Tensor, grid: tuple[int, int, int], patch_size: int) -> torch.Tensor:
    """(B, N) bool keep decisions -> (B, T, gh*p, gw*p) bool pixel mask (nearest upsampling)."""
    T, gh, gw = grid
    k = keep.view(keep.shape[0], T, gh, gw)
    return k.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


@torch.no_grad()
def interpretability_table(model: nn.Module, dataset: Dataset | Iterable[dict],
                           methods: Iterable[str] = tuple(METHODS),
                           kept_ratio: float | None = None, *, match: str = "ratio",
                           reference_model: nn.Module | None = None, batch_size: int = 4,
                           num_workers: int | dict[str, Any] = 0, group: int = -1,
                           device: str | torch.device | None = None,
                           progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Pixel accuracy, mean accuracy and mIoU of each method's kept-patch mask vs object masks.

    dataset items: {"video" (C, T, H, W) or "image" (C, H, W), "mask" (T, H, W) or (H, W) bool,
    optional "failed"} with H, W the model's input size (e.g. `VideoClipDataset(...,
    return_masks=True)` or `ImageMaskFolder`). Budget (the method table's vocabulary,
    `videored.models.methods.run_methods`): kept_ratio, a fixed fraction of patches reaching the
    last block for every budgeted method; None: they match the interpreter (run on
    `reference_model`, default `model`) input by input, by `match` ("ratio" or "gmacs").
    Explanation-only names (`methods.EXPLANATIONS`: rollout, gradcam, chefer) explain `model`
    and keep their top patches at the same kept ratio (`explanations.run_with_explanations`).
    group: which group's keep mask (default the last, i.e. the tokens that reach the last block).
    num_workers: DataLoader workers, or all its worker keywords (a run's are
    `videored.engine.builders.loader_workers(cfg)`: workers, start method, hang timeout).

    Returns {method: {"miou", "pixel_acc", "mean_acc" (percent), "kept" (mean kept fraction),
    "samples", "failed"}}. Failed items (undecodable videos) are skipped and counted.
    """
    methods = [m if m in EXPLANATIONS else get_method(m).name for m in methods]
    baselines = [m for m in methods if m in EXPLANATIONS or get_method(m).budgeted]
    reference = reference_model or model
    if kept_ratio is None and baselines and getattr(reference, "interpreters", None) is None:
        raise ValueError(f"kept_ratio is needed for {baselines}: this model has no interpreter "
                         "whose kept ratio they could match")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    nets = [model] if reference is model else [model, reference]
    was_training = [net.training for net in nets]
    for net in nets:
        net.eval()
        if hasattr(net, "reset_random_selector"):
            net.reset_random_selector()  # the same random masks on every call
    workers = num_workers if isinstance(num_workers, dict) else {"num_workers": num_workers}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, **workers)
    conf = {m: torch.zeros(2, 2, dtype=torch.long) for m in methods}
    kept = {m: 0.0 for m in methods}
    samples = failed = 0
    for step, batch in enumerate(loader):
        x = model_input(batch)  # float input (uint8 video normalized with its own normalization)
        if "mask" not in batch:
            raise KeyError("dataset items have no 'mask': build the video dataset with "
                           "return_masks=True")
        mask = batch["mask"].bool()
        ok = ~batch["failed"].bool() if "failed" in batch else torch.ones(len(x), dtype=torch.bool)
        failed += int((~ok).sum())
        if not ok.any():
            continue
        x, mask = x[ok].to(device), mask[ok]
        if mask.ndim == 3:  # images: (B, H, W) -> (B, 1, H, W)
            mask = mask.unsqueeze(1)
        outputs = run_with_explanations(model, x, methods, match=match, kept_ratio=kept_ratio,
                                        reference_model=reference)
        for m in methods:
            keep = outputs[m].keep[group].cpu()
            pixels = keep_to_pixels(keep, model.grid, model.patch_size)
            conf[m] += confusion_counts(pixels, mask)
            kept[m] += float(keep.float().mean(1).sum())
        samples += len(x)
        if progress:
            progress(f"batch {step + 1}: {samples} samples, {failed} failed")
    for net, mode in zip(nets, was_training):
        net.train(mode)
    if failed:
        log.warning("interpretability: %d failed items skipped (%d used)", failed, samples)
    table = {}
    for m in methods:
        row = segmentation_metrics(conf[m]) if samples else dict.fromkeys(
            ("pixel_acc", "mean_acc", "miou"), float("nan"))
        table[m] = {**row, "kept": kept[m] / max(samples, 1), "samples": samples,
                    "failed": failed}
    return table


__all__ = ["confusion_counts", "interpretability_table", "keep_to_pixels",
           "segmentation_metrics"]
