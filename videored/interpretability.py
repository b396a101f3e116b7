"""Interpretability metric (paper Table 1): relevance maps scored as weakly supervised segmentation.

Two protocols (`PROTOCOLS`), each counting 2x2 confusions C[target, predicted] (background = 0,
object = 1) over every pixel of every frame of the dataset and taking the ratios once at the end:

- "benchmark" (`videored eval --masks`' default): the public ImageNet-Segmentation protocol of
  Chefer et al. (CVPR'21; hila-chefer/Transformer-Explainability,
  `baselines/ViT/imagenet_seg_eval.py`). Each frame's
  (gh, gw) patch map is upsampled x patch_size bilinearly (`F.interpolate(..., mode="bilinear")`,
  align_corners False, the reference's default), min-max normalised over the frame, and
  thresholded at its mean (object = value > mean). A constant map (0/0: NaN in the reference)
  predicts background everywhere and has soft map 0. mAP is the mean over frames of the average
  precision of the soft map, over both classes' pixels at once (scores 1 - map for background,
  map for object: the reference's `get_ap_scores` on its 2-channel output). The map of a token
  scorer is its informative score with dropped tokens 0 (as the paper draws it); an explanation's
  is its relevance.
- "kept" (`interpretability_table`'s default, the in-eval view): the token-reduction view: the
  kept-patch mask (each patch_size x patch_size block takes its patch's decision) is the
  predicted object mask; explanations keep their top patches at the interpreter's kept fraction.

    pixel_acc = (TP + TN) / all pixels
    mean_acc  = (TP / (TP + FN) + TN / (TN + FP)) / 2          (paper Table 1's mAcc)
    miou      = (TP / (TP + FP + FN) + TN / (TN + FN + FP)) / 2
    map       = mean over frames of AP (benchmark protocol only)

A class absent from both masks over the whole dataset: the kept protocol leaves it out of the
means (nan-mean); the benchmark scores its IoU 0 (the reference's eps denominator). Values are
percentages, as in the paper's Table 1.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


from videored.models.explanations import (canonical_name, explanation_pixels,
                                          explanation_scores, is_explanation,
                                          run_with_explanations)
from videored.models.methods import ANY_MODEL_METHODS, get_method, run_methods
from videored.normalization import model_input

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


PROTOCOLS = ("benchmark", "kept")


def segmentation_metrics(confusion: torch.Tensor, *, absent_iou: str = "skip"
                         ) -> dict[str, float]:
    """{"pixel_acc", "mean_acc", "miou"} in percent from (2, 2) counts C[target, predicted].

    absent_iou: a class absent from both masks is left out of mIoU ("skip") or counts 0 ("zero",
    the benchmark's rule)."""
    c = confusion.double()
    diag = c.diagonal()
    per_class_total = c.sum(1)  # target pixels of each class
    union = c.sum(1) + c.sum(0) - diag
    acc = (diag / per_class_total).numpy()  # 0/0 = nan where a class has no target pixels
    iou = (diag / union).numpy()  # nan where a class is absent from both masks
    if absent_iou == "zero":
        iou = np.nan_to_num(iou)
    total = float(c.sum())
    return {
        "pixel_acc": 100.0 * float(diag.sum()) / total if total else float("nan"),
        "mean_acc": 100.0 * float(np.nanmean(acc)) if not np.isnan(acc).all() else float("nan"),
        "miou": 100.0 * float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan"),
    }


def benchmark_soft_maps(maps: torch.Tensor, grid: tuple[int, int, int],
                        patch_size: int) -> torch.Tensor:
    """(B, N) patch maps -> (B, T, gh*p, gw*p) soft maps: bilinear x p (align_corners False),
    min-max over each frame; NaN where a frame's map is constant (the reference's 0/0).
    Pixel maps (B, T, gh*p, gw*p) (full LRP) are not upsampled, as in the reference."""
    T, gh, gw = grid
    if maps.ndim == 4:
        up = maps.detach().double().reshape(-1, 1, gh * patch_size, gw * patch_size)
    else:
        m = maps.detach().double().reshape(-1, 1, gh, gw)  # (B*T, 1, gh, gw)
        up = F.interpolate(m, scale_factor=patch_size, mode="bilinear", align_corners=False)
    lo = up.amin(dim=(2, 3), keepdim=True)
    hi = up.amax(dim=(2, 3), keepdim=True)
    return ((up - lo) / (hi - lo)).reshape(maps.shape[0], T, gh * patch_size, gw * patch_size)


def benchmark_prediction(soft: torch.Tensor) -> torch.Tensor:
    """(..., H, W) soft maps -> bool object masks: value > the frame's mean (NaN: background)."""
    return soft > soft.mean(dim=(-2, -1), keepdim=True)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision of 1-D scores for bool labels: Σ_n (R_n - R_(n-1)) P_n over the
    distinct score thresholds, highest first (tied scores enter together; sklearn's
    `average_precision_score`). NaN without positives."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order].double()
    positives = float(y.sum())
    if positives == 0:
        return float("nan")
    tp = torch.cumsum(y, 0)
    last = torch.ones_like(s, dtype=torch.bool)  # last position of each run of equal scores
    last[:-1] = s[1:] != s[:-1]
    tp = tp[last]
    seen = torch.nonzero(last).squeeze(1).double() + 1
    recall = tp / positives
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((steps * tp / seen).sum())


def benchmark_frame_ap(soft: torch.Tensor, target: torch.Tensor) -> float:
    """The reference's AP of one frame (H, W): scores (1 - map, map) against labels
    (background, object) of every pixel at once; NaN map values count 0; a NaN AP is 0."""
    s = torch.nan_to_num(soft.reshape(-1), nan=0.0)
    bg = torch.nan_to_num(1 - soft.reshape(-1), nan=0.0)
    t = target.reshape(-1).bool()
    ap = average_precision(torch.cat([bg, s]), torch.cat([~t, t]))
    return 0.0 if np.isnan(ap) else ap


class SegmentationScore:
    """Accumulates one method's counts over a dataset: confusion (2, 2) and per-frame APs."""

    def __init__(self) -> None:
        self.confusion = torch.zeros(2, 2, dtype=torch.long)
        self.aps: list[float] = []

    def add_benchmark(self, maps: torch.Tensor, target: torch.Tensor,
                      grid: tuple[int, int, int], patch_size: int) -> None:
        """maps (B, N) patch maps or (B, T, H, W) pixel maps, target (B, T, H, W) bool: the
        benchmark protocol."""
        soft = benchmark_soft_maps(maps, grid, patch_size)
        self.confusion += confusion_counts(benchmark_prediction(soft), target)
        for frame, mask in zip(soft.flatten(0, 1), target.flatten(0, 1)):
            self.aps.append(benchmark_frame_ap(frame, mask))

    def add_kept(self, keep: torch.Tensor, target: torch.Tensor,
                 grid: tuple[int, int, int], patch_size: int) -> None:
        """keep (B, N) bool, target (B, T, H, W) bool: the kept-patch protocol."""
        self.confusion += confusion_counts(keep_to_pixels(keep, grid, patch_size), target)

    def metrics(self, protocol: str) -> dict[str, float]:
        """{"pixel_acc", "mean_acc", "miou"} (+ "map" in the benchmark protocol), percent."""
        bench = protocol == "benchmark"
        if not int(self.confusion.sum()):
            keys = ("pixel_acc", "mean_acc", "miou") + (("map",) if bench else ())
            return dict.fromkeys(keys, float("nan"))
        row = segmentation_metrics(self.confusion, absent_iou="zero" if bench else "skip")
        if bench:
            row["map"] = 100.0 * float(np.mean(self.aps))
        return row


def keep_to_pixels(keep: torch.Tensor, grid: tuple[int, int, int], patch_size: int) -> torch.Tensor:
    """(B, N) bool keep decisions -> (B, T, gh*p, gw*p) bool pixel mask (nearest upsampling)."""
    T, gh, gw = grid
    k = keep.view(keep.shape[0], T, gh, gw)
    return k.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def canonical_methods(methods: Iterable[str]) -> list[str]:
    """Method-table names and explanation names as their current names (old ones warn once)."""
    return [canonical_name(m) if is_explanation(m) else get_method(m).name for m in methods]


def needs_budget(methods: Iterable[str], protocol: str) -> list[str]:
    """The methods that need a kept ratio (fixed, or the interpreter's to match)."""
    return [m for m in methods if (get_method(m).budgeted if not is_explanation(m)
                                   else protocol == "kept")]


def method_maps(model: nn.Module, x: torch.Tensor, methods: list[str], protocol: str, *,
                kept_ratio: float | None, match: str, reference_model: nn.Module,
                group: int = -1) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """{method: (what is scored, kept fraction (B,) or None)} on one batch x.

    benchmark: a (B, N) map: a token scorer's informative scores with its dropped tokens 0
    (group `group`'s scores and keep), an explanation's relevance (`explanation_scores`; full
    LRP: its (B, T, H, W) pixel map, `explanation_pixels`).
    kept: the (B, N) bool keep mask of `group` (explanations: top patches at the same ratio)."""
    if protocol == "kept":
        outputs = run_with_explanations(model, x, methods, match=match, kept_ratio=kept_ratio,
                                        reference_model=reference_model)
        return {m: (out.keep[group], out.keep[group].float().mean(1))
                for m, out in outputs.items()}
    scorers = [m for m in methods if not is_explanation(m)]
    outputs = run_methods(model, x, scorers, match=match, kept_ratio=kept_ratio,
                          reference_model=reference_model) if scorers else {}
    result = {}
    for m in methods:
        if is_explanation(m):  # a pixel-level map where the row has one (full LRP)
            pixels = explanation_pixels(model, x, m)
            result[m] = (explanation_scores(model, x, m) if pixels is None else pixels, None)
        else:
            out = outputs[m]
            keep = out.keep[group]
            result[m] = (out.scores[group] * keep, keep.float().mean(1))
    return result


@torch.no_grad()
def interpretability_table(model: nn.Module, dataset: Dataset | Iterable[dict],
                           methods: Iterable[str] = ANY_MODEL_METHODS,
                           kept_ratio: float | None = None, *, match: str = "ratio",
                           protocol: str = "kept",
                           reference_model: nn.Module | None = None, batch_size: int = 4,
                           num_workers: int | dict[str, Any] = 0, group: int = -1,
                           device: str | torch.device | None = None,
                           progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Pixel accuracy, mean accuracy, mIoU (and mAP, benchmark protocol) of each method's map.

    dataset items: {"video" (C, T, H, W) or "image" (C, H, W), "mask" (T, H, W) or (H, W) bool,
    optional "failed"} with H, W the model's input size (e.g. `VideoClipDataset(...,
    return_masks=True)` or `ImageNetSegmentation`). protocol: "benchmark" or "kept" (module
    docstring). Budget of the token scorers (the method table's, `methods.run_methods`):
    kept_ratio, a fixed fraction of patches reaching the last block for every budgeted method;
    None: they match the interpreter (run on `reference_model`, default `model`) input by input,
    by `match` ("ratio" or "gmacs"). Explanation names (`models.explanations`) explain `model`;
    in the kept protocol they keep their top patches at the same kept ratio.
    group: which group's scores / keep mask (default the last: the tokens reaching the last block).
    num_workers: DataLoader workers, or all its worker keywords (a run's are
    `videored.engine.builders.loader_workers(cfg)`: workers, start method, hang timeout).

    Returns {method: {"miou", "pixel_acc", "mean_acc", "map" (percent; "map" in the benchmark
    protocol only), "kept" (mean kept fraction; NaN for explanations in the benchmark protocol),
    "samples", "failed"}}. Failed items (undecodable videos) are skipped and counted.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    methods = canonical_methods(methods)
    reference = reference_model or model
    budgeted = needs_budget(methods, protocol)
    if kept_ratio is None and budgeted and getattr(reference, "interpreters", None) is None:
        raise ValueError(f"kept_ratio is needed for {budgeted}: this model has no interpreter "
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
    scores = {m: SegmentationScore() for m in methods}
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
        maps = method_maps(model, x, methods, protocol, kept_ratio=kept_ratio, match=match,
                           reference_model=reference, group=group)
        for m, (scored, fraction) in maps.items():
            add = scores[m].add_benchmark if protocol == "benchmark" else scores[m].add_kept
            add(scored.cpu(), mask, model.grid, model.patch_size)
            kept[m] += float("nan") if fraction is None else float(fraction.sum())
        samples += len(x)
        if progress:
            progress(f"batch {step + 1}: {samples} samples, {failed} failed")
    for net, mode in zip(nets, was_training):
        net.train(mode)
    if failed:
        log.warning("interpretability: %d failed items skipped (%d used)", failed, samples)
    return {m: {**scores[m].metrics(protocol), "kept": kept[m] / max(samples, 1),
                "samples": samples, "failed": failed} for m in methods}


__all__ = ["PROTOCOLS", "SegmentationScore", "average_precision", "benchmark_frame_ap",
           "benchmark_prediction", "benchmark_soft_maps", "canonical_methods", "confusion_counts",
           "interpretability_table", "keep_to_pixels", "method_maps", "needs_budget",
           "segmentation_metrics"]
