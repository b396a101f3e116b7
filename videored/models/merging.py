"""Tokens that stand for groups of patches (ToMe merges, EViT's fused token): the bookkeeping.

A `MergedTokens` is the patch part of a sequence after some rows were combined (cls kept apart):
    x       (B, n, D)  one row per group of original patches
    size    (B, n)     how many original patches each row covers (sums to N per sample)
    source  (B, N)     the row that covers each original patch (ToMe's "source" tracking, kept
                       as one row id per patch instead of an (n, N) 0/1 matrix: same content,
                       N instead of n·N numbers)
    index   (B, n)     the original patch a row stands at: a merged row keeps its destination
                       patch's position; -1 for a row that is not one patch's (EViT's fused token)

Every reduction is a `row_map` (B, n_old) -> new row of each old row; `regroup` applies one.
Pure functions; nothing here knows about blocks or methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MergedTokens:
    x: torch.Tensor  # (B, n, D)
    size: torch.Tensor  # (B, n) float
    source: torch.Tensor  # (B, N) long
    index: torch.Tensor  # (B, n) long, -1 = no single position

    @property
    def merged(self) -> bool:
        """True once any row covers more than one patch (proportional attention matters)."""
        return self.x.shape[1] < self.source.shape[1]


def unmerged(patches: torch.Tensor) -> MergedTokens:
    """Every patch its own row: patches (B, N, D)."""
    B, N, _ = patches.shape
    index = torch.arange(N, device=patches.device).expand(B, N)
    return MergedTokens(x=patches, size=patches.new_ones(B, N), source=index, index=index)


def regroup(tokens: MergedTokens, row_map: torch.Tensor, index: torch.Tensor,
            weight: torch.Tensor, *, normalize: bool) -> MergedTokens:
    """Combine rows: new row j = sum of weight_i * x_i over the old rows i with row_map[i] = j.

    row_map (B, n) long in [0, n_new); index (B, n_new) the new rows' positions; weight (B, n).
    normalize: divide each new row by its summed weight (ToMe: weight = size gives the
    size-weighted average); else a plain weighted sum (EViT's fused token).
    """
    B, n_new = index.shape
    D = tokens.x.shape[-1]
    x = tokens.x.new_zeros(B, n_new, D).scatter_add(
        1, row_map.unsqueeze(-1).expand(-1, -1, D), tokens.x * weight.unsqueeze(-1))
    if normalize:
        total = weight.new_zeros(B, n_new).scatter_add(1, row_map, weight)
        x = x / total.unsqueeze(-1)
    size = tokens.size.new_zeros(B, n_new).scatter_add(1, row_map, tokens.size)
    return MergedTokens(x=x, size=size, source=row_map.gather(1, tokens.source), index=index)


def positions(tokens: MergedTokens, num_patches: int) -> torch.Tensor:
    """(B, N) bool: the original positions the rows stand at (fused rows mark none)."""
    B = tokens.index.shape[0]
    out = torch.zeros(B, num_patches + 1, dtype=torch.bool, device=tokens.index.device)
    # index -1 (fused rows) goes to the spare last column, which is cut off
    col = torch.where(tokens.index < 0, num_patches, tokens.index)
    return out.scatter(1, col, True)[:, :num_patches]


def patch_sizes(tokens: MergedTokens) -> torch.Tensor:
    """(B, N) float: the size of the row that covers each patch."""
    return tokens.size.gather(1, tokens.source)


__all__ = ["MergedTokens", "patch_sizes", "positions", "regroup", "unmerged"]
