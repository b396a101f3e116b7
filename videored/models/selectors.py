"""Baseline token scorers and the keep decisions, as small pure tensor functions.

Which method uses which scorer, its cost and its budget live in the method table
(`videored.models.methods`); this file holds only the tensor functions.

Every scorer maps the alive patch tokens of one group to a score per row (B, n); higher means
more informative. `topk_keep` turns scores into a keep mask at a fixed ratio. Scores are
rescaled to [0, 1] per sample (divided by the sample's max) so that heatmaps of all methods share
one colour scale; only their order matters for selection.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from . import block_adapter as ba
from .budget import check_fraction
from .tokens import TokenSet



def num_to_keep(counts: torch.Tensor, keep_rate: float | torch.Tensor) -> torch.Tensor:
    """Tokens kept per sample: round(keep_rate * alive), at least 1. counts (B,) -> (B,).

    keep_rate: one per-selection rate, or one per sample (B,) (matched budgets). Computed in
    float64 so the rule is the same wherever it is applied (model, cost prediction).
    keep_rate 0 is allowed (e.g. matching an interpreter that kept nothing) and keeps 1."""
    check_fraction(keep_rate, "keep_rate")
    rate = torch.as_tensor(keep_rate, dtype=torch.float64, device=counts.device)
    return torch.clamp(torch.round(counts.double() * rate).long(), min=1)


def topk_keep(scores: torch.Tensor, tokens: TokenSet,
              keep_rate: float | torch.Tensor) -> torch.Tensor:
    """Keep the round(keep_rate * alive) highest-scoring real rows of each sample. -> (B, n) bool.

    keep_rate: float, or (B,) one per sample."""
    valid = tokens.valid_mask
    k = num_to_keep(valid.sum(1), keep_rate)  # (B,)
    # Stable: among tied scores the lowest row (earliest patch) wins, the same set on CPU and GPU
    # and whatever else is in the batch.
    order = scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < k.unsqueeze(1)) & valid


def _per_sample_unit_max(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    scores = scores.masked_fill(~valid, 0.0)
    return scores / scores.amax(dim=1, keepdim=True).clamp_min(1e-12)


def random_scores(tokens: TokenSet, generator: torch.Generator,
                  seeds: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform scores (B, n), drawn on the CPU so any device gives the same sequence.

    With per-sample `seeds` (B,), row b comes from its own generator seeded with seeds[b], so a
    sample's mask does not depend on its batch (e.g. sharded evaluation); else from `generator`.
    """
    shape = tokens.index.shape
    if seeds is None:
        u = torch.rand(shape, generator=generator)
    else:
        u = torch.stack([torch.rand(shape[1], generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds.tolist()])
    return u.to(tokens.x.device).masked_fill(~tokens.valid_mask, 0.0)


def attention_scores(block: Block, cls: torch.Tensor, tokens: TokenSet,
                     attn_mask: torch.Tensor | None) -> torch.Tensor:
    """Raw attention: cls -> patch attention of `block` (the group's first), mean over heads.

    cls (B, 1, D), tokens.x (B, n, D) -> (B, n). attn_mask (B, 1, 1, 1+n) bool, True = real key.
    Only the cls query and the keys are projected (`block_adapter.cls_attention`): the full qkv
    of the block is computed again when the block runs (that cost is counted).
    """
    probs = ba.cls_attention(block, torch.cat([cls, tokens.x], dim=1), attn_mask)  # (B, n)
    return _per_sample_unit_max(probs, tokens.valid_mask)


def temporal_difference_scores(tokens: TokenSet, grid: tuple[int, int, int]) -> torch.Tensor:
    """L2 distance between a token at frame t and the same position at t-1 (zeros before frame 0).

    Tokens dropped earlier count as zeros. grid = (T, gh, gw); patch n is frame n // (gh*gw).
    Images (T = 1) reduce to the token norm. -> (B, n)
    """
    T, gh, gw = grid
    B, _, D = tokens.x.shape
    N = T * gh * gw
    full = tokens.x.new_zeros(B, N, D)
    full.scatter_(1, tokens.index.unsqueeze(-1).expand(-1, -1, D),
                  tokens.x.masked_fill(~tokens.valid_mask.unsqueeze(-1), 0.0))
    full = full.view(B, T, gh * gw, D)
    previous = F.pad(full, (0, 0, 0, 0, 1, 0))[:, :T]  # frame t-1, zeros before frame 0
    dist = (full - previous).norm(dim=-1).view(B, N)  # (B, N)
    return _per_sample_unit_max(torch.gather(dist, 1, tokens.index), tokens.valid_mask)


__all__ = [
    "num_to_keep", "topk_keep", "random_scores", "attention_scores", "temporal_difference_scores",
]
