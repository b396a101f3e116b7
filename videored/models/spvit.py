"""SPViT (Kong et al., ECCV 2022, "SPViT: Enabling Faster Vision Transformers via Latency-Aware
Soft Token Pruning"): a learned token selector before a few blocks; the pruned tokens are not
thrown away but folded into one *package token* that the later blocks process like any token.

What we follow (the paper's Sec. 3 as its public code implements it, PeiyanFlying/SPViT
`vit_l2_3keep_senet.py`, `MultiheadPredictorLG` and `VisionTransformerDiffPruning.forward`):

- Selector (Eq. 1-2, "dynamic attention-based multi-head token selector"), on the alive patch
  tokens x (n, D) split into the H heads' channel chunks x^h (n, hd):
      z^h = GELU(W_in LN(x^h))                                     (n, hd)
      local^h = z^h[:, :hd/2],  global^h = mean over alive tokens of z^h[:, hd/2:]
      s^h = MLP(hd -> hd/2 -> hd/4 -> 2)([local^h, global^h])      (n, 2) logits [keep, prune]
      a^h = sigmoid(W_2 GELU(W_1 avgpool(x)))  one weight per head per token (the "SE" branch
            on the per-head channel means, H -> H/2 -> H)
      log p = sum_h a^h log_softmax(s^h) / sum_h a^h     (Gumbel decisions are drawn from this)
      p     = sum_h a^h softmax(s^h) / sum_h a^h         (the keep score of the package token)
  The reference code builds the per-head LN/linear/MLP list from one module object, so the
  heads share those weights; we do the same (one batched MLP over the head axis).
- Decisions: Gumbel-softmax with straight-through hard samples in training, argmax at test;
  pruning is cumulative (a token pruned at one stage never comes back). The cls token and the
  package token are never pruned.
- Package token: the tokens pruned at a stage are summed, each weighted by its keep
  probability p_i[keep] (the softmax score above): P = sum_{i pruned now} p_i x_i. Not
  normalized: the reference code computes the normalizing sum and leaves the division commented
  out (`represent_token = x2_sum  #/ (placeholder_score_sum)`); `normalize_package=True` gives
  the score-weighted average instead (supplement A.6 speaks of "average pooling" of the removed
  tokens). Across stages the new package is added to the existing one (one extra token in
  total, supplement A.4 option 1). Supplement Table 9 reports both options; its best DeiT-S row
  (3 package tokens + attention branch, 79.34) is the concatenating one, the additive one gives
  79.26-79.30 at 2.63-2.64 GFLOPs; we implement only the additive one (see docs).
- Placement and targets (reference `main_l2_vit_3keep_senet.py`): selectors before the 4th,
  7th and 10th of DeiT's 12 blocks (0-indexed [3, 6, 9]); cumulative keep targets base^s
  (base 0.7: 0.7, 0.49, 0.343), the ratio loss and distillation in `pruning_losses.py`.

Where we differ: tokens are really removed at test time (gather; the reference masks
attention, which is what its training does too); samples of a batch keep different counts and
run through `ragged.run_blocks` (packed rows by default: no padding in the per-token layers);
the selector scores only the patch tokens (the reference scores the package tokens too and then
overrides their decision to keep); a package token exists only once a sample has pruned
something (a zero package row would change the keep-all result).

Training (`train=True`): the sequence keeps all N patches and the decisions act as an attention
policy (DynamicViT's `softmax_with_policy`, `block_adapter.PolicyAttend`): a pruned token is no key for
any other token (it attends only to itself), so the kept tokens, cls and the package compute
exactly what the gathered sequence computes, and the straight-through gradient reaches the
selector through the policy and the package weights. The reported MACs are those of the
gathered run at the same counts (what inference costs), not of the masked training forward.

Budget (`kept_ratio=`): instead of the native decisions, stage s keeps the top-k alive tokens
by keep probability, k_s = round(N * kept_ratio^(s/S)) (EViT's geometric rule, `evit_schedule`;
SPViT's own targets are of this form), ties toward the lowest patch index.

Cost (`spvit_macs`, the one formula for the forward's report and the prediction): blocks
before the first stage at N + 1 tokens; at stage s the selector on the n_{s-1} alive patches,
then the stage's blocks at n_s + 1 (cls) + 1 (package, once anything was pruned) tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import flops
from .block_adapter import PolicyAttend, block_forward  # PolicyAttend: re-exported
from .budget import check_fraction
from .evit import evit_schedule
from .merge_blocks import MergeRun
from .merging import MergedTokens
from .pruning_losses import argmax_keep, budget_keep, gumbel_keep
from .ragged import run_blocks


@dataclass
class PruneRun(MergeRun):
    """A `MergeRun` of a learned pruner, with per-sample cost and the differentiable decisions.

    macs        (B,) float64: the blocks' and selectors' MACs of each sample (samples keep
                different counts, unlike ToMe / EViT whose `macs` is one float)
    decisions   per stage (B, N) float keep decisions at original positions (0/1; carries the
                straight-through gradient in training): what the keep-ratio loss reads
    kept        per stage (B,) long: patches kept by the stage
    """
    decisions: list[torch.Tensor] = field(default_factory=list)
    kept: list[torch.Tensor] = field(default_factory=list)


# ---------------------------------------------------------------------------- the selector

def _head_gate_width(heads: int) -> int:
    return max(heads // 2, 1)


class SPViTSelector(nn.Module):
    """SPViT's multi-head token selector (module docstring, Eq. 1-2) for tokens of width `dim`
    split in `heads` chunks. forward(x (B, n, D), alive (B, n) bool) ->
    (log_probs (B, n, 2), probs (B, n, 2)), [keep, prune] on the last axis."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"SPViTSelector: dim {dim} is not divisible by heads {heads}")
        hd = dim // heads
        if hd < 4:
            raise ValueError(f"SPViTSelector: head width {hd} < 4 leaves the hd/4 layer empty")
        self.heads, self.head_dim = heads, hd
        self.in_norm = nn.LayerNorm(hd)
        self.in_proj = nn.Linear(hd, hd)
        self.out = nn.Sequential(nn.Linear(hd, hd // 2), nn.GELU(), nn.Linear(hd // 2, hd // 4),
                                 nn.GELU(), nn.Linear(hd // 4, 2))
        g = _head_gate_width(heads)
        self.head_gate = nn.Sequential(nn.Linear(heads, g), nn.GELU(), nn.Linear(g, heads),
                                       nn.Sigmoid())

    def forward(self, x: torch.Tensor, alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, n, D = x.shape
        H, hd = self.heads, self.head_dim
        xh = x.unflatten(-1, (H, hd))  # (B, n, H, hd)
        weight = self.head_gate(xh.mean(dim=-1))  # (B, n, H): per-head channel means -> SE
        z = F.gelu(self.in_proj(self.in_norm(xh)))  # (B, n, H, hd)
        half = hd // 2
        mask = alive.to(z.dtype)[:, :, None, None]  # (B, n, 1, 1)
        glob = (z[..., half:] * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        logits = self.out(torch.cat([z[..., :half], glob.expand(B, n, H, hd - half)], dim=-1))  # (B, n, H, 2)
        w = weight.unsqueeze(-1)  # (B, n, H, 1)
        total = weight.sum(dim=-1, keepdim=True)  # (B, n, 1)
        log_probs = (w * logits.log_softmax(dim=-1)).sum(dim=2) / total
        probs = (w * logits.softmax(dim=-1)).sum(dim=2) / total
        return log_probs, probs


def selector_macs(num_tokens: torch.Tensor | int, dim: int, heads: int):
    """MACs of `SPViTSelector` on n tokens (matrix products only): per token and head
    W_in hd² and the MLP hd·hd/2 + hd/2·hd/4 + hd/4·2; per token the head gate 2·H·H/2.
    The global mean, the head weighting and the package sum are elementwise (free)."""
    hd = dim // heads
    per_head = hd * hd + hd * (hd // 2) + (hd // 2) * (hd // 4) + (hd // 4) * 2
    return num_tokens * (heads * per_head + 2 * heads * _head_gate_width(heads))


# ---------------------------------------------------------------------------- cost and budget

def check_stages(stage_blocks: Sequence[int], depth: int, selectors: int | None = None) -> list[int]:
    """Strictly increasing block indices in [0, depth), one selector each."""
    stages = [int(s) for s in stage_blocks]
    if not stages or any(b <= a for a, b in zip(stages, stages[1:])) or stages[0] < 0 \
            or stages[-1] >= depth:
        raise ValueError(f"stage_blocks {stages} must be strictly increasing block indices in "
                         f"[0, {depth})")
    if selectors is not None and selectors != len(stages):
        raise ValueError(f"{selectors} selectors for {len(stages)} stages {stages}")
    return stages


def spvit_blocks(depth: int) -> list[int]:
    """The reference placement: before the 4th, 7th, 10th of 12 blocks ([3, 6, 9]); for other
    depths the same k·depth/4 rule as EViT (`evit.evit_blocks`)."""
    return sorted({k * depth // 4 for k in (1, 2, 3)})


def spvit_targets(stages: int, base: float = 0.7) -> list[float]:
    """Cumulative keep targets of the stages: base^s (0.7, 0.49, 0.343 for base 0.7)."""
    return [base ** s for s in range(1, stages + 1)]


def budget_counts(num_patches: int, stages: int, kept_ratio: float) -> list[int]:
    """Patches alive after each stage at a kept-ratio budget: round(N · r^(s/S)) (at least 1),
    never more than the stage before (pruning is cumulative)."""
    counts, n = [], num_patches
    for k in evit_schedule(num_patches, stages, kept_ratio):
        n = min(n, k)
        counts.append(n)
    return counts


def spvit_macs(num_patches: int, depth: int, stage_blocks: Sequence[int],
               kept: torch.Tensor | Sequence[int], *, dim: int, heads: int,
               mlp_ratio: float) -> torch.Tensor:
    """(B,) float64 MACs of the blocks and selectors, kept (B, S) or (S,): patches alive after
    each stage. The one cost formula: run_spvit reports it, the method table predicts with it."""
    kept = torch.as_tensor(kept, dtype=torch.float64)
    kept = kept.reshape(-1, kept.shape[-1])  # (B, S)
    stages = check_stages(stage_blocks, depth, kept.shape[1])
    bounds = stages + [depth]
    N = float(num_patches)
    macs = torch.full(kept.shape[:1], float(stages[0] * flops.block_macs(num_patches + 1, dim, mlp_ratio)),
                      dtype=torch.float64)
    n = torch.full_like(macs, N)
    for s in range(len(stages)):
        macs = macs + selector_macs(n, dim, heads)
        n = kept[:, s]
        tokens = n + 1 + (n < N).double()  # cls + alive + the package once anything was pruned
        macs = macs + (bounds[s + 1] - bounds[s]) * flops.block_macs(tokens, dim, mlp_ratio)
    return macs


def spvit_budget_macs(num_patches: int, depth: int, stage_blocks: Sequence[int], kept_ratio: float,
                      *, dim: int, heads: int, mlp_ratio: float) -> float:
    """MACs at a kept-ratio budget without a forward (the same formula, the budget's counts)."""
    counts = budget_counts(num_patches, len(stage_blocks), kept_ratio)
    return float(spvit_macs(num_patches, depth, stage_blocks, counts, dim=dim, heads=heads,
                            mlp_ratio=mlp_ratio)[0])


def rows_at_positions(tokens: MergedTokens, num_patches: int) -> torch.Tensor:
    """The patch rows put back at their original positions: (B, N, D), zeros where a patch has
    no row of its own (pruned into the package, or never kept). What SPViT's token distillation
    (`pruning_losses.token_mse`) compares with the dense model's tokens."""
    return rows_to_positions(tokens.x, tokens.index, num_patches)


def rows_to_positions(x: torch.Tensor, index: torch.Tensor, num_patches: int) -> torch.Tensor:
    """x (B, n, D) rows, index (B, n) long original patch of each row (-1: none) -> (B, N, D)
    with zeros where no row stands."""
    B, n, D = x.shape
    col = torch.where(index >= 0, index, torch.full_like(index, num_patches))
    out = x.new_zeros(B, num_patches + 1, D)
    return out.scatter(1, col.unsqueeze(-1).expand(-1, -1, D), x)[:, :num_patches]


# ---------------------------------------------------------------------------- the forward

def _scatter_rows(values: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, N: int):
    """values (B, m) at rows (B, m) bool whose original patch is pos (B, m) -> (B, N), 0 elsewhere."""
    col = torch.where(rows, pos, torch.full_like(pos, N))  # the spare column N is cut off
    out = values.new_zeros(values.shape[0], N + 1)
    return out.scatter(1, col, torch.where(rows, values, torch.zeros_like(values)))[:, :N]


def _decide(log_probs, probs, eligible, kept_target: int | None) -> torch.Tensor:
    """(B, m) bool test-time keep decisions among the eligible rows: the budget's top-k, or
    the argmax."""
    if kept_target is not None:
        k = torch.full(eligible.shape[:1], kept_target, dtype=torch.long, device=eligible.device)
        return budget_keep(probs[..., 0].detach(), eligible, k)
    return argmax_keep(log_probs) & eligible


def run_spvit(blocks: Sequence[nn.Module], cls: torch.Tensor, patches: torch.Tensor,
              selectors: Sequence[nn.Module], *, stage_blocks: Sequence[int], train: bool,
              kept_ratio: float | None = None, mlp_ratio: float = 4.0,
              normalize_package: bool = False, generator: torch.Generator | None = None,
              tau: float = 1.0, mode: str = "packed") -> PruneRun:
    """SPViT over `blocks`: cls (B, 1, D), patches (B, N, D) -> PruneRun.

    selectors: one per stage (`SPViTSelector`, or any module with its signature), run before
    blocks `stage_blocks`. train: Gumbel samples and the masked (policy) forward; else hard
    decisions and real removal, samples with unequal counts through `ragged.run_blocks(mode)`.
    kept_ratio: evaluation at a budget (top-k per stage, `budget_counts`) instead of the
    selectors' own decisions (not with train).

    Reported per stage: scores = the keep probability of each patch alive at the stage (0 for
    the ones pruned before), keep = the patches alive after it, decisions = keep as float.
    tokens: the rows after the last block, the package row (index -1, size = patches pruned)
    first when present, then the alive patches in their order; padding rows (size 0, index -1)
    where a sample kept fewer rows than the longest; source maps every pruned patch to the
    package row. The cls token and the package are never pruned.
    """
    if train and kept_ratio is not None:
        raise ValueError("run_spvit: kept_ratio is an evaluation budget; training samples the "
                         "selectors' decisions (train=True, kept_ratio=None)")
    if kept_ratio is not None:
        check_fraction(kept_ratio, where="run_spvit")
    stages = check_stages(stage_blocks, len(blocks), len(selectors))
    B, N, D = patches.shape
    seq = run_blocks(blocks[:stages[0]], torch.cat([cls, patches], dim=1), None)
    if train:
        cls, tokens, scores, keep, decisions, kept = _run_train(
            blocks, seq, selectors, stages, normalize=normalize_package, generator=generator, tau=tau)
    else:
        targets = budget_counts(N, len(stages), kept_ratio) if kept_ratio is not None else None
        cls, tokens, scores, keep, decisions, kept = _run_eval(
            blocks, seq, selectors, stages, targets=targets, normalize=normalize_package, mode=mode)
    # the selectors' cost: SPViTSelector's head count (a stand-in selector is costed as one)
    heads = getattr(selectors[0], "heads", blocks[0].attn.num_heads)
    macs = spvit_macs(N, len(blocks), stages, torch.stack(kept, dim=1).cpu(), dim=D, heads=heads,
                      mlp_ratio=mlp_ratio)
    return PruneRun(cls=cls, tokens=tokens, macs=macs, scores=scores, keep=keep,
                    decisions=decisions, kept=kept)


def _package(x: torch.Tensor, weight: torch.Tensor, normalize: bool) -> torch.Tensor:
    """x (B, m, D), weight (B, m) (0 on rows not pruned now) -> (B, D) = sum_i w_i x_i
    (elementwise product and sum: no matrix product, free in the MACs convention)."""
    total = (x * weight.unsqueeze(-1)).sum(dim=1)
    if normalize:
        total = total / weight.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return total


def _compact(mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, m) bool -> (order (B, m'), m'): the True rows first in their order, cut to the
    longest sample's count."""
    order = (~mask).to(torch.int8).argsort(dim=1, stable=True)
    width = int(mask.sum(dim=1).max()) if mask.numel() else 0
    return order[:, :width], width


def _gather_rows(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _run_eval(blocks, seq, selectors, stages, *, targets, normalize, mode):
    """Hard decisions, real removal, packed blocks -> (cls, tokens, scores, keep, decisions,
    kept counts)."""
    B, L, D = seq.shape
    N = L - 1
    dev = seq.device
    # State between stages: cls (B, 1, D); the package (B, D) and whether it exists (B,); the
    # alive patches compacted to the front, rows (B, m, D), their original positions pos (B, m)
    # and valid (B, m) (False on padding rows of samples that kept fewer than m).
    cls, rows = seq[:, :1], seq[:, 1:]
    pos = torch.arange(N, device=dev).expand(B, N)
    valid = torch.ones(B, N, dtype=torch.bool, device=dev)
    package = rows.new_zeros(B, D)
    has_package = torch.zeros(B, dtype=torch.bool, device=dev)
    bounds = stages + [len(blocks)]
    scores, keep, decisions, kept_counts = [], [], [], []
    for s, selector in enumerate(selectors):
        log_probs, probs = selector(rows, valid)  # (B, m, 2) each: patches only
        keep_row = _decide(log_probs, probs, valid, None if targets is None else targets[s])
        pruned_now = valid & ~keep_row
        package = package + _package(rows, probs[..., 0] * pruned_now.to(rows.dtype), normalize)
        has_package = has_package | pruned_now.any(dim=1)
        scores.append(_scatter_rows(probs[..., 0], pos, valid, N))
        alive = _scatter_rows(keep_row.to(rows.dtype), pos, keep_row, N) > 0
        keep.append(alive)
        decisions.append(alive.to(rows.dtype))
        kept_counts.append(keep_row.sum(dim=1))
        order, m = _compact(keep_row)
        rows, pos, valid = _gather_rows(rows, order), pos.gather(1, order), keep_row.gather(1, order)
        # the blocks' sequence: cls, then [package, patches...] compacted (no package row for
        # a sample that pruned nothing yet)
        full_valid = torch.cat([has_package.unsqueeze(1), valid], dim=1)
        full_order, width = _compact(full_valid)
        full = _gather_rows(torch.cat([package.unsqueeze(1), rows], dim=1), full_order)
        full_valid = full_valid.gather(1, full_order)
        full = full * full_valid.unsqueeze(-1).to(full.dtype)  # padding rows: zeros
        out = run_blocks(blocks[bounds[s]:bounds[s + 1]], torch.cat([cls, full], dim=1),
                         None if bool(full_valid.all()) else full_valid, mode=mode)
        cls, out = out[:, :1], out[:, 1:]  # (B, width, D)
        package = torch.where(has_package[:, None], out[:, 0], package)
        shift = has_package.long().unsqueeze(1) + torch.arange(m, device=dev)  # (B, m)
        rows = _gather_rows(out, shift.clamp(max=max(width - 1, 0))) if width else rows
        rows = rows * valid.unsqueeze(-1).to(rows.dtype)
    kept = torch.stack(kept_counts, dim=1)  # (B, S)
    # the result rows: [package, alive patches...] per sample, compacted
    x_rows = torch.cat([package.unsqueeze(1), rows], dim=1)
    row_pos = torch.cat([pos.new_full((B, 1), -1), pos], dim=1)
    row_valid = torch.cat([has_package.unsqueeze(1), valid], dim=1)
    order, _ = _compact(row_valid)
    x_rows, row_pos, row_valid = _gather_rows(x_rows, order), row_pos.gather(1, order), row_valid.gather(1, order)
    x_rows = x_rows * row_valid.unsqueeze(-1).to(x_rows.dtype)
    is_patch, is_pkg = row_valid & (row_pos >= 0), row_valid & (row_pos == -1)
    n_pruned = (N - kept[:, -1]).to(seq.dtype)[:, None]
    size = torch.where(is_patch, torch.ones_like(n_pruned),
                       torch.where(is_pkg, n_pruned, torch.zeros_like(n_pruned)))
    row_ids = torch.arange(row_pos.shape[1], device=dev).expand_as(row_pos)
    src = _scatter_rows(row_ids, row_pos, is_patch, N)
    source = torch.where(keep[-1], src, torch.zeros_like(src))  # pruned -> the package, row 0
    index = torch.where(is_patch, row_pos, torch.full_like(row_pos, -1))
    tokens = MergedTokens(x=x_rows, size=size, source=source, index=index)
    return cls, tokens, scores, keep, decisions, kept_counts


def _run_train(blocks, seq, selectors, stages, *, normalize, generator, tau):
    """Gumbel straight-through decisions, every token kept in the sequence, the decisions as
    an attention policy -> (cls, tokens, scores, keep, decisions, kept counts)."""
    B, L, D = seq.shape
    N = L - 1
    cls, patches = seq[:, :1], seq[:, 1:]
    package = None  # (B, D) once the first stage ran
    has_package = torch.zeros(B, dtype=torch.bool, device=seq.device)
    prev = patches.new_ones(B, N)  # cumulative keep decisions (float, straight-through)
    stage_at = {b: s for s, b in enumerate(stages)}
    scores, keep, decisions, kept_counts = [], [], [], []
    for i in range(stages[0], len(blocks)):
        if i in stage_at:
            selector = selectors[stage_at[i]]
            log_probs, probs = selector(patches, prev.detach() > 0.5)
            # a sample for every token, times the previous decision (cumulative; the reference's
            # `gumbel_softmax(...) * prev_decision`, gradient through both)
            decision = gumbel_keep(log_probs, tau=tau, generator=generator) * prev
            pruned_now = prev - decision  # (B, N): 1 on the tokens pruned at this stage
            new = _package(patches, probs[..., 0] * pruned_now, normalize)
            # an absent package is a masked row whose value is meaningless: start it fresh
            package = new if package is None else package * has_package[:, None].to(new.dtype) + new
            has_package = has_package | (pruned_now.detach() > 0.5).any(dim=1)
            scores.append(probs[..., 0] * (prev.detach() > 0.5))
            prev = decision
            alive = prev.detach() > 0.5
            keep.append(alive)
            decisions.append(prev)
            kept_counts.append(alive.sum(dim=1))
        x = torch.cat([cls, package.unsqueeze(1), patches], dim=1)  # (B, 2 + N, D)
        policy = torch.cat([torch.ones_like(prev[:, :1]), has_package[:, None].to(prev.dtype), prev], dim=1)
        x = block_forward(blocks[i], x, PolicyAttend(blocks[i].attn, policy))
        cls, package, patches = x[:, :1], x[:, 1], x[:, 2:]
    kept = torch.stack(kept_counts, dim=1)
    alive = keep[-1]
    n_pruned = (N - kept[:, -1]).to(seq.dtype)
    size = torch.cat([torch.where(has_package, n_pruned, torch.zeros_like(n_pruned))[:, None],
                      alive.to(seq.dtype)], dim=1)
    ar = torch.arange(N, device=seq.device).expand(B, N)
    index = torch.cat([ar.new_full((B, 1), -1), torch.where(alive, ar, torch.full_like(ar, -1))], dim=1)
    source = torch.where(alive, ar + 1, torch.zeros_like(ar))
    tokens = MergedTokens(x=torch.cat([package.unsqueeze(1), patches], dim=1), size=size,
                          source=source, index=index)
    return cls, tokens, scores, keep, decisions, kept_counts


__all__ = ["PolicyAttend", "PruneRun", "SPViTSelector", "budget_counts", "check_stages",
           "rows_at_positions", "rows_to_positions",
           "run_spvit", "selector_macs", "spvit_blocks", "spvit_budget_macs", "spvit_macs",
           "spvit_targets"]
