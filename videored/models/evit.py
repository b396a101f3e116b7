"""EViT (Liang et al., ICLR 2022, "Not All Patches Are What You Need") as pure tensor functions.

At a few blocks, between attention and MLP, the patch rows are reorganized by the cls token's
attention in that block (softmax row of cls over all keys, cls->cls dropped, mean over heads):
the k most attended rows stay (in their order) and the others are fused into one new row,
x_fused = sum_i a_i x_i (paper Sec. 3.3 and Algorithm 1: a plain attention-weighted sum, the
weights not renormalized), appended after them. A fused row from an earlier stage is an ordinary
candidate at the next stage (kept or fused again), as in the paper's pseudocode.

Where: the paper puts the stages in the 4th, 7th and 10th of DeiT's 12 blocks (and the 5th,
9th, 13th of 16-block LV-ViT): blocks (1-indexed) 1 + k·L/4 for k = 1, 2, 3, i.e. 0-indexed
`k * L // 4`. JointST uses the same rule (its ViT-B has 12 blocks: the 4th, 7th, 10th), so image
and video models reduce at the same depths.

Budget (`evit_schedule`): kept_ratio = fraction of the N patches kept as attentive tokens
after the last stage; the fused token rides along like cls (one more row, counted in the cost,
not in the kept ratio). Stage s keeps k_s = round(N · kept_ratio^(s/S)) attentive rows (at
least 1) plus the fused row: the same rate at every stage, as the paper's single keep rate κ
(EViT's own setting; kept_ratio ≈ κ^S; the paper's k = ceil(κ (n-1)) per stage differs by rounding). A stage
that would not shrink the sequence (k_s + 1 >= rows) keeps everything (no fusion), so
kept_ratio 1 is the dense model. When an earlier fused row is among the attentive ones, one
patch fewer is kept.
"""
from __future__ import annotations

import math

import torch

from .budget import check_fraction


def evit_blocks(depth: int) -> list[int]:
    """0-indexed blocks that reorganize tokens: [3, 6, 9] for 12 blocks (the paper's 4th, 7th,
    10th); shallow test models get the distinct values of k * depth // 4."""
    return sorted({k * depth // 4 for k in (1, 2, 3)})


def evit_schedule(num_patches: int, stages: int, kept_ratio: float) -> list[int]:
    """Attentive rows k_s kept by each of `stages` reorganizations (the fused row comes on top)."""
    check_fraction(kept_ratio, where="evit_schedule")
    return [max(round(num_patches * kept_ratio ** (s / stages)), 1) for s in range(1, stages + 1)]


def keep_rate(kept_ratio: float, stages: int) -> float:
    """EViT's keep rate κ per stage that leaves `kept_ratio` after `stages` stages."""
    return kept_ratio ** (1.0 / stages)


def warmup_kept_ratio(progress: float, kept_ratio: float, stages: int) -> float:
    """EViT's keep-rate warm-up (Sec. 4): the per-stage keep rate goes from 1 to its target
    κ = kept_ratio ** (1/S) along a cosine as progress goes 0 -> 1 (clipped: before 0 everything
    is kept, after 1 the target holds); returns the kept_ratio of that point, rate ** S."""
    target = keep_rate(kept_ratio, stages)
    t = min(max(progress, 0.0), 1.0)
    rate = target + (1.0 - target) * 0.5 * (1.0 + math.cos(math.pi * t))
    return rate ** stages


def attentive_rows(cls_attn: torch.Tensor, k: int) -> torch.Tensor:
    """(B, n) cls attention -> (B, n) bool, True on the k most attended rows (ties: earlier)."""
    order = cls_attn.argsort(dim=1, descending=True, stable=True)[:, :k]  # (B, k)
    return torch.zeros_like(cls_attn, dtype=torch.bool).scatter(1, order, True)


def fusion_map(attentive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) bool with the same count k per row -> (row_map (B, n), keep (B, k)).

    The attentive rows become rows 0..k-1 in their order, every other row maps to row k (the
    fused token); keep holds the old row of each attentive new row."""
    k = int(attentive[0].sum())
    rank = attentive.long().cumsum(dim=1) - 1  # (B, n): position among the attentive rows
    row_map = torch.where(attentive, rank, torch.full_like(rank, k))
    keep = attentive.long().argsort(dim=1, descending=True, stable=True)[:, :k]  # (B, k)
    return row_map, keep


warmup_keep_ratio = warmup_kept_ratio  # the old name (same arguments, same value)

__all__ = ["attentive_rows", "evit_blocks", "evit_schedule", "fusion_map", "keep_rate",
           "warmup_kept_ratio", "warmup_keep_ratio"]
