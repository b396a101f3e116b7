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

from videored.models.budget import Budget, method_kwargs
from videored.models.methods import Method, get_method
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
    setting: float | None = None  # the method's own setting it ran at (Method.setting_name)
    error: str = ""  # why decoding failed (failed views), as the dataset reports it


@dataclass(eq=False)
class Arm:
    """One (method, budget) pair of an evaluation, run on every decoded batch.

    name       its key in the results (unique among the arms of a run), e.g. "random@0.3"
    method     a method-table entry; with `topk`, the entry's `topk` setting (the learned scorer
               keeping the top of its own scores at the budget: trade-off curves)
    net        the model it runs on (the IA-RED² model, or the dense model of paper Table 4)
    budget     a `Budget` (models/budget.py); None: the method's own decisions (original, the
               interpreter's threshold) or the model's default setting
    reference  for a matched budget: the arm whose outputs on the same batch set the per-clip
               targets (its kept ratio or GMACs); it must run before this arm
    """
    name: str
    method: str
    net: nn.Module
    budget: Budget | None = None
    reference: str | None = None
    topk: bool = False

    @property
    def entry(self) -> Method:
        entry = get_method(self.method)
        if self.topk and entry.topk is None:
            raise ValueError(f"{self.method} has no topk setting in the method table")
        return entry.topk if self.topk else entry

    def forward_kwargs(self, batch: int, outputs: dict[str, Any]) -> dict:
        """model(x, **forward_kwargs(...)) runs this arm on a batch of `batch` clips; outputs:
        {arm name: ReductionOutput} of the arms already run on that batch."""
        if self.budget is None:
            return method_kwargs(self.net, self.entry)
        reference = None
        if self.budget.matched:
            if self.reference not in outputs:
                raise ValueError(f"arm {self.name}: its reference {self.reference!r} has not run "
                                 "on this batch (order the arms reference first)")
            reference = self.budget.reference_values(outputs[self.reference])
        return self.budget.forward_kwargs(self.net, self.entry, batch=batch, reference=reference)

    def describe(self) -> dict | None:
        """How results.json records its budget (None: unbudgeted)."""
        if self.budget is None:
            return None
        said = self.budget.describe()
        if self.budget.matched and self.reference is not None:
            said["reference"] = self.reference
        return said


def check_arm_order(arms: list[Arm]) -> None:
    """Unique names; every matched arm after its reference (ValueError naming the arm)."""
    seen: set[str] = set()
    for arm in arms:
        if arm.name in seen:
            raise ValueError(f"two arms are named {arm.name!r}")
        if arm.budget is not None and arm.budget.matched and arm.reference not in seen:
            raise ValueError(f"arm {arm.name}: reference {arm.reference!r} must come before it")
        seen.add(arm.name)


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
                  seed: int = 0, method: str = "original", budget: Budget | None = None,
                  **forward_kwargs: Any) -> list[ViewPrediction]:
    """Every view of `dataset` through `method` of the method table at a fixed `budget` (None:
    its own decisions or the model's default setting): the one-arm case of `predict_arms`."""
    arm = Arm(method, method, model, budget)
    return predict_arms([arm], dataset, dist=dist, batch_size=batch_size, workers=workers,
                        amp=amp, progress=progress, seed=seed, **forward_kwargs)[method]


@torch.no_grad()
def predict_arms(arms: list[Arm], dataset: Dataset, *, dist: DistInfo, batch_size: int,
                 workers: dict | None = None, amp: bool = False, progress: str | None = None,
                 seed: int = 0, **forward_kwargs: Any) -> dict[str, list[ViewPrediction]]:
    """{arm name: every view of `dataset`}, gathered on all ranks. Each batch is decoded once and
    run through every arm in order (a matched arm reads its reference's outputs on that batch),
    so a whole comparison or trade-off curve costs one pass of decoding.

    workers: the DataLoader's worker arguments (`builders.loader_workers`; None: none).
    forward_kwargs go to every model call as they are. progress: the description of one bar over
    (batch x arm) showing the running clip-level error of the arm just run (None: no bar).

    Sharded with a DistributedSampler (which pads the last round with duplicates); each gathered
    list holds each dataset index exactly once, in index order. The random selector draws each
    view's mask from (seed, dataset index), so results do not depend on the number of ranks or on
    which other arms run.
    """
    check_arm_order(arms)
    for net in {id(a.net): a.net for a in arms}.values():
        net.eval()
    sampler = DistributedSampler(_Indexed(dataset), num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=False) if dist.enabled else None
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, sampler=sampler, **(workers or {}))
    rows: dict[str, list[ViewPrediction]] = {a.name: [] for a in arms}
    wrong = dict.fromkeys(rows, 0)
    bar = tqdm(total=len(loader) * len(arms), desc=progress, leave=False,
               disable=progress is None or not dist.is_main)
    for batch in loader:
        x = model_input(batch, dist.device)  # decoded once; uint8 video normalized here
        outputs: dict[str, Any] = {}
        for arm in arms:
            kwargs = arm.forward_kwargs(len(x), outputs)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = arm.net(x, random_seeds=seed * 10_000_019 + batch["index"],
                              **kwargs, **forward_kwargs)
            outputs[arm.name] = out
            rows[arm.name] += _views_of(batch, out, kwargs.get("setting"))
            wrong[arm.name] += int((out.logits.argmax(1).cpu() != batch["label"]).sum())
            bar.update(1)
            bar.set_postfix_str(f"{arm.name} err {100 * wrong[arm.name] / len(rows[arm.name]):.1f}%")
    bar.close()
    gathered = {}
    for name, mine in rows.items():
        unique = {row.index: row for part in all_gather_object(mine) for row in part}
        gathered[name] = [unique[i] for i in sorted(unique)]
    return gathered


def _views_of(batch: dict[str, Any], out, setting) -> list[ViewPrediction]:
    """One ViewPrediction per clip of a batch from a forward's output (ReductionOutput)."""
    probs = out.logits.float().softmax(dim=1).cpu()
    kept, gflops = out.kept_ratio.float().cpu(), out.gflops.float().cpu()
    if isinstance(setting, torch.Tensor):
        setting = setting.double().cpu().tolist()
    elif setting is not None:
        setting = [float(setting)] * len(probs)
    return [ViewPrediction(
        index=int(batch["index"][b]), video_index=int(batch["video_index"][b]),
        spatial_index=int(batch["spatial_index"][b]),
        temporal_index=int(batch["temporal_index"][b]), label=int(batch["label"][b]),
        probs=probs[b], failed=bool(batch["failed"][b]), kept_ratio=float(kept[b]),
        gflops=float(gflops[b]), path=str(batch["path"][b]), error=str(batch["error"][b]),
        setting=None if setting is None else setting[b]) for b in range(len(probs))]


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
        # the mean setting budgeted methods ran at (None for the others); its name is the
        # method's `setting_name` (run_eval adds it). `per_selection_keep_ratio`: the old,
        # deprecated key of the same number (it is a kept ratio for tome / evit)
        "setting": _mean(v.setting for v in scored_views if v.setting is not None),
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
