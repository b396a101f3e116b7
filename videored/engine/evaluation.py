"""clip-1 / video-1 evaluation: per-view predictions, distributed gathering, aggregation.

Protocol (paper Sec. 4, Table 4):
- clip-1: one clip, one centre crop (the middle spatial view of the centre temporal view);
- video-1: the same clip, all three spatial crops (left/centre/right, or top/centre/bottom for
  portrait video), softmax scores averaged.
Errors are 100 - accuracy in percent, for top-1 and top-5. A video whose decoding failed (in any
view) is listed and counted in `failed_videos`; errors are over the videos that were scored, and
`num_videos` always equals the dataset's video count.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from videored.models.methods import MATCH_MODES, budget_kwargs
from videored.normalization import model_input

from .distributed import DistInfo, all_gather_object


@dataclass
class ViewPrediction:
    """One evaluated view (a spatial crop of a temporal clip) of one video."""
    index: int  # dataset index (unique): used to drop the sampler's padding duplicates
    video_index: int
    spatial_index: int
    temporal_index: int
    label: int
    probs: torch.Tensor  # (num_classes,) softmax
    failed: bool
    kept_ratio: float  # fraction of patch tokens that reached the last block
    gflops: float
    path: str = ""
    keep_ratio: float | None = None  # per-selection setting a budgeted method ran at
    error: str = ""  # why decoding failed (failed views), as the dataset reports it


@dataclass
class ViewBudget:
    """The budget of a budgeted method, view by view (one definition for eval and its speed).

    kept_ratio: one fixed target kept ratio for every view; else `per_view` maps a dataset index
    to the reference method's kept ratio (match "ratio") or GMACs (match "gmacs") on that view.
    """
    kept_ratio: float | None = None
    per_view: dict[int, float] | None = None
    match: str = "ratio"

    def __post_init__(self) -> None:
        if self.match not in MATCH_MODES:
            raise ValueError(f"match must be one of {MATCH_MODES}, got {self.match!r}")
        if (self.kept_ratio is None) == (self.per_view is None):
            raise ValueError("a ViewBudget needs exactly one of kept_ratio and per_view")

    @classmethod
    def matching(cls, reference: list[ViewPrediction], match: str) -> "ViewBudget":
        key = "kept_ratio" if match == "ratio" else "gflops"
        return cls(per_view={v.index: getattr(v, key) for v in reference}, match=match)

    def forward_kwargs(self, model: nn.Module, method: str, index: torch.Tensor) -> dict:
        """model(x, **forward_kwargs(...)) runs `method` at this budget on the views `index`."""
        if self.kept_ratio is not None:
            return budget_kwargs(model, method, kept_ratio=self.kept_ratio)
        target = torch.tensor([self.per_view[int(i)] for i in index], dtype=torch.float64)
        if self.match == "ratio":
            return budget_kwargs(model, method, kept_ratio=target)
        return budget_kwargs(model, method, gmacs=target)

    def describe(self, reference: str = "interpreter") -> dict:
        if self.kept_ratio is not None:
            return {"match": "fixed", "kept_ratio": self.kept_ratio}
        return {"match": self.match, "reference": reference}


class _Indexed(Dataset):
    """Adds the dataset index to every item, so gathered predictions can be de-duplicated."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[i]
        if not isinstance(item, dict):  # (x, y) pairs: images or tensors, one view each
            item = {"video": item[0], "label": int(item[1])}
        item = dict(item)
        item["index"] = i
        item.setdefault("video_index", i)
        item.setdefault("spatial_index", 0)
        item.setdefault("temporal_index", 0)
        item.setdefault("failed", False)
        item.setdefault("path", "")
        item.setdefault("error", "")
        item.pop("mask", None)
        return item


@torch.no_grad()
def predict_views(model: nn.Module, dataset: Dataset, *, dist: DistInfo, batch_size: int,
                  workers: dict | None = None, amp: bool = False, progress: str | None = None,
                  seed: int = 0, method: str = "original", budget: ViewBudget | None = None,
                  **forward_kwargs: Any) -> list[ViewPrediction]:
    """Every view of `dataset` through `method` of the method table, gathered on all ranks.

    budget: where `method` is budgeted, its target per view (None: the model's default
    keep_ratio). workers: the DataLoader's worker arguments (`builders.loader_workers`; None:
    none). forward_kwargs go to the model as they are.

    Sharded with a DistributedSampler (which pads the last round with duplicates); the gathered
    list holds each dataset index exactly once, in index order. The random selector draws each
    view's mask from (seed, dataset index), so results do not depend on the number of ranks.
    """
    model.eval()
    sampler = DistributedSampler(_Indexed(dataset), num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=False) if dist.enabled else None
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, sampler=sampler, **(workers or {}))
    rows: list[ViewPrediction] = []
    bar = tqdm(loader, desc=progress, disable=progress is None or not dist.is_main, leave=False)
    for batch in bar:
        x = model_input(batch, dist.device)  # uint8 video: normalized on the device
        kwargs = (budget.forward_kwargs(model, method, batch["index"]) if budget is not None
                  else budget_kwargs(model, method))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(x, random_seeds=seed * 10_000_019 + batch["index"],
                        **kwargs, **forward_kwargs)
        probs = out.logits.float().softmax(dim=1).cpu()
        kept, gflops = out.kept_ratio.float().cpu(), out.gflops.float().cpu()
        setting = kwargs.get("keep_ratio")
        if isinstance(setting, torch.Tensor):
            setting = setting.double().cpu().tolist()
        elif setting is not None:
            setting = [float(setting)] * len(probs)
        for b in range(len(probs)):
            rows.append(ViewPrediction(
                index=int(batch["index"][b]), video_index=int(batch["video_index"][b]),
                spatial_index=int(batch["spatial_index"][b]),
                temporal_index=int(batch["temporal_index"][b]), label=int(batch["label"][b]),
                probs=probs[b], failed=bool(batch["failed"][b]), kept_ratio=float(kept[b]),
                gflops=float(gflops[b]), path=str(batch["path"][b]),
                error=str(batch["error"][b]),
                keep_ratio=None if setting is None else setting[b]))
    unique = {row.index: row for part in all_gather_object(rows) for row in part}
    return [unique[i] for i in sorted(unique)]


def _topk_correct(probs: torch.Tensor, label: int, k: int) -> bool:
    return label in probs.topk(min(k, probs.numel())).indices.tolist()


def aggregate(views: Iterable[ViewPrediction], num_classes: int) -> dict[str, Any]:
    """clip-1 / video-1 top-1 and top-5 errors, per-class video-1 accuracy, kept ratio, GFLOPs."""
    by_video: dict[int, list[ViewPrediction]] = defaultdict(list)
    for view in views:
        by_video[view.video_index].append(view)
    failed = sorted({v.path or str(v.video_index) for vs in by_video.values() for v in vs if v.failed})
    reasons = {v.path or str(v.video_index): v.error for vs in by_video.values() for v in vs if v.failed}
    scored = {vid: vs for vid, vs in by_video.items() if not any(v.failed for v in vs)}
    hits = defaultdict(int)
    per_class_total, per_class_hit = [0] * num_classes, [0] * num_classes
    for vs in scored.values():
        clip = _centre_view(vs)
        video_probs = torch.stack([v.probs for v in vs]).mean(0)  # softmax scores averaged
        label = vs[0].label
        hits["clip1"] += _topk_correct(clip.probs, label, 1)
        hits["clip1_top5"] += _topk_correct(clip.probs, label, 5)
        hits["video1"] += _topk_correct(video_probs, label, 1)
        hits["video1_top5"] += _topk_correct(video_probs, label, 5)
        if 0 <= label < num_classes:
            per_class_total[label] += 1
            per_class_hit[label] += _topk_correct(video_probs, label, 1)
    n = len(scored)
    scored_views = [v for vs in scored.values() for v in vs]

    def err(key: str) -> float | None:
        return 100.0 * (1.0 - hits[key] / n) if n else None

    return {
        "clip1_err": err("clip1"), "video1_err": err("video1"),
        "clip1_top5_err": err("clip1_top5"), "video1_top5_err": err("video1_top5"),
        "kept_ratio": _mean(v.kept_ratio for v in scored_views),
        "gflops": _mean(v.gflops for v in scored_views),
        # the per-selection setting budgeted methods ran at (None for the others)
        "per_selection_keep_ratio": _mean(v.keep_ratio for v in scored_views
                                          if v.keep_ratio is not None),
        "per_class_video1_acc": [100.0 * h / t if t else None
                                 for h, t in zip(per_class_hit, per_class_total)],
        "num_videos": len(by_video), "num_scored": n, "failed_videos": failed,
        "failure_reasons": {path: reasons[path] for path in failed},
    }


def _centre_view(views: list[ViewPrediction]) -> ViewPrediction:
    """The middle spatial crop of the middle temporal clip (clip-1's single view)."""
    spatial = sorted({v.spatial_index for v in views})
    temporal = sorted({v.temporal_index for v in views})
    s, t = spatial[len(spatial) // 2], temporal[len(temporal) // 2]
    return next(v for v in views if v.spatial_index == s and v.temporal_index == t)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None
