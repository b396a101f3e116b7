"""ToMe (Bolya et al., ICLR 2023, "Token Merging: Your ViT But Faster") as pure tensor functions.

In every block, between attention and MLP, r patch tokens are merged away by bipartite soft
matching: the rows are split alternately into sets A (rows 0, 2, 4, ...) and B (rows 1, 3, ...),
each A row draws an edge to its most similar B row (cosine similarity of the block's attention
keys, mean over heads), the r A rows with the most similar edges are merged into their B rows by
size-weighted average, and the other A rows stay. The cls token is kept apart and never merged
(ToMe gives it -inf similarity; here it is not in either set). Later attention adds log(size)
to the logits of every key (proportional attention), so a row standing for s identical tokens
gets the attention those s tokens would have had together.

Budget (`tome_schedule`): kept_ratio = fraction of the N patch tokens left after the last
block's merge; ToMe's own setting is the r schedule derived from it. The R = N - round(kept_ratio * N) removals are spread over the blocks as evenly as
integers allow (block l brings the total to floor(l R / L): ToMe's constant r, rounded so the
budget is met exactly). Bipartite matching can at most halve the rows of a block, so L blocks
cannot go below about N / 2^L; when later blocks could not catch up under that cap, earlier
blocks merge more (the budget is met whenever it can be), and below the floor the schedule
halves in every block (more tokens than asked, never fewer).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .budget import check_fraction


def tome_schedule(num_patches: int, depth: int, kept_ratio: float) -> list[int]:
    """r per block: how many patch rows each of the `depth` blocks merges away to leave
    `kept_ratio` of the patches."""
    check_fraction(kept_ratio, where="tome_schedule")
    total = num_patches - max(round(kept_ratio * num_patches), 1)
    schedule, n, removed = [], num_patches, 0
    for layer in range(1, depth + 1):
        r = min(layer * total // depth - removed, n // 2)  # the even share, capped
        while r < n // 2 and total - removed - r > _most_removable(n - r, depth - layer):
            r += 1  # the later blocks could not reach the budget: merge more here
        schedule.append(r)
        n, removed = n - r, removed + r
    return schedule


def _most_removable(n: int, blocks: int) -> int:
    """Most rows `blocks` blocks can merge away from n: each at most halves (n -> ceil(n/2))."""
    left = n
    for _ in range(blocks):
        left -= left // 2
    return n - left


@dataclass
class Matching:
    """One bipartite soft matching of n rows (see `bipartite_soft_matching`).

    row_map  (B, n) long: the new row of every old row
    keep     (B, n_new) long: the old row whose position each new row takes (A rows that stay,
             then every B row)
    num_a, num_b: sizes of the two sets (the similarity matmul costs num_a * num_b * c)
    """
    row_map: torch.Tensor
    keep: torch.Tensor
    num_a: int
    num_b: int


@torch.no_grad()
def bipartite_soft_matching(metric: torch.Tensor, r: int) -> Matching:
    """Merge the r most similar A->B edges. metric (B, n, c): per-row keys (mean over heads).

    New row order: the A rows that stay (in their order), then all B rows (in their order); an
    A row merged away maps to its B row. Ties in the edge order go to the earlier A row.
    """
    B, n, _ = metric.shape
    device = metric.device
    rows_a = torch.arange(0, n, 2, device=device)  # (nA,)
    rows_b = torch.arange(1, n, 2, device=device)  # (nB,)
    num_a, num_b = len(rows_a), len(rows_b)
    r = min(r, num_b)
    unit = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    similarity = unit[:, rows_a] @ unit[:, rows_b].transpose(1, 2)  # (B, nA, nB) cosine
    best, best_b = similarity.max(dim=-1)  # (B, nA): each A row's strongest edge
    order = best.argsort(dim=1, descending=True, stable=True)  # (B, nA) edges, strongest first
    merged_a, stay_a = order[:, :r], order[:, r:].sort(dim=1).values  # (B, r), (B, nA - r)
    num_stay = num_a - r
    new_of_a = torch.empty(B, num_a, dtype=torch.long, device=device)
    new_of_a.scatter_(1, stay_a, torch.arange(num_stay, device=device).expand(B, num_stay))
    new_of_a.scatter_(1, merged_a, num_stay + best_b.gather(1, merged_a))
    row_map = torch.empty(B, n, dtype=torch.long, device=device)
    row_map[:, rows_a] = new_of_a
    row_map[:, rows_b] = num_stay + torch.arange(num_b, device=device)
    keep = torch.cat([rows_a[stay_a], rows_b.expand(B, num_b)], dim=1)  # (B, n - r)
    return Matching(row_map=row_map, keep=keep, num_a=num_a, num_b=num_b)


__all__ = ["Matching", "bipartite_soft_matching", "tome_schedule"]
