"""Top-k with tied scores keeps the lowest rows (earliest patches) first: the same set on every
run, on CPU and GPU, and whatever order the batch is in."""
import torch

from videored.models.evit import attentive_rows
from videored.models.selectors import topk_keep
from videored.models.tokens import full_token_set


def _tied_scores(B: int = 4, n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 3, (B, n), generator=g).float()  # three values: many ties


def _reference(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Plain rule: sort by (-score, row) and take the first k of each sample."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for b, row in enumerate(scores.tolist()):
        for i in sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]:
            keep[b, i] = True
    return keep


def test_topk_keep_breaks_ties_by_lowest_index():
    scores = _tied_scores()
    tokens = full_token_set(torch.zeros(*scores.shape, 2))
    keep = topk_keep(scores, tokens, 0.3)  # round(0.3 * 64) = 19 of 64
    assert torch.equal(keep, _reference(scores, 19))
    for _ in range(3):  # repeated runs
        assert torch.equal(topk_keep(scores, tokens, 0.3), keep)
    perm = torch.tensor([2, 0, 3, 1])  # a permuted batch keeps each sample's own set
    assert torch.equal(topk_keep(scores[perm], full_token_set(torch.zeros(4, 64, 2)), 0.3),
                       keep[perm])


def test_evit_attentive_rows_break_ties_by_lowest_index():
    scores = _tied_scores()
    assert torch.equal(attentive_rows(scores, 10), _reference(scores, 10))
    perm = torch.tensor([3, 1, 0, 2])
    assert torch.equal(attentive_rows(scores[perm], 10), _reference(scores, 10)[perm])
