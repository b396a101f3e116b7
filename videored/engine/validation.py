"""Greedy validation during training: top-1, kept ratio and GMACs on a held-out split.

Every rank takes every world-th sample (no padding, so counts are exact); sums are all-reduced.
The full clip-1 / video-1 protocol lives in the `eval` command.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .builders import unpack_batch
from .distributed import DistInfo, all_reduce_sum


@torch.no_grad()
def validate(model: nn.Module, dataset: Dataset, active_groups: int, dist: DistInfo,
             batch_size: int, workers: dict | None = None, amp: bool = False,
             **forward: object) -> dict[str, float]:
    """{"acc", "kept", "gflops", "samples", "failed"} of greedy inference with `active_groups`
    (and `forward` = selector / keep_ratio of a reduction trained through); `workers`: the
    DataLoader's worker arguments (`builders.loader_workers`; None: none)."""
    was_training = model.training
    model.eval()
    shard = list(range(dist.rank, len(dataset), dist.world_size))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=shard, **(workers or {}),
                        generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
    sums = torch.zeros(5, dtype=torch.float64, device=dist.device)  # correct, kept, gflops, n, failed
    for batch in loader:
        x, y = unpack_batch(batch, dist.device)  # uint8 video is normalized on the device there
        ok = ~batch["failed"].bool() if isinstance(batch, dict) and "failed" in batch else torch.ones_like(y, dtype=torch.bool)
        ok = ok.to(dist.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(x, active_groups=active_groups, **forward)
        correct = (out.logits.argmax(1) == y) & ok
        sums += torch.stack([correct.sum().double(), (out.kept_ratio * ok).sum().double(),
                             (out.gflops * ok).sum().double(), ok.sum().double(), (~ok).sum().double()])
    all_reduce_sum(sums)
    model.train(was_training)
    n = max(sums[3].item(), 1.0)
    return {"acc": sums[0].item() / n, "kept": sums[1].item() / n, "gflops": sums[2].item() / n,
            "samples": int(sums[3].item()), "failed": int(sums[4].item())}
