"""SViT (Liu et al., WACV 2024, "Revisiting Token Pruning for Object Detection and Instance
Segmentation"): a 2-layer MLP gate before each of the later blocks decides which tokens that
block processes; the pruned tokens skip the block but stay in the sequence, so a later gate,
which sees all tokens, can reactivate them.

What we follow (the paper's Sec. 3 and its public code, uzh-rpg/svit
`classification/selective_vit.py`: `SelectiveModule`, `SelectiveVisionTransformer.forward_features`
and `forward_features_fast_path`; the supplement for ImageNet):

- Gate per pruning block: LayerNorm(D) -> Linear(D, D/4) -> GELU -> Linear(D/4, 2) ->
  log-softmax, [keep, prune]; the cls token is not gated and always kept (the reference's
  "version 1"; its last gate, "version 0", may also gate cls: we never prune cls).
- Decisions: Gumbel-softmax, straight-through hard samples (tau 1) in training; at test keep
  where p(keep) > p(prune) (the reference's argmin over the log-probabilities: ties prune).
  Every gate decides over ALL N patches, independently of earlier gates: reactivation.
- The block update x <- M ⊙ Block(x restricted to the kept tokens) + (1 - M) ⊙ x: a pruned
  token's value passes through unchanged. In training the pruned tokens are masked out as keys
  (the reference's `src_key_padding_mask`) and the ST decision M multiplies the block output;
  at test the kept tokens are gathered, run, and scattered back (the reference gathers them
  into a nested tensor; we pack them: `ragged.run_blocks(mode="packed")`, rows of all samples
  in one tensor, attention per sample).
- Placement and targets (reference `svit_s`): gates before blocks 4..12 (1-indexed) of DeiT-S,
  i.e. 0-indexed 3..11, one gate each; keep targets [0.7]*3 + [0.49]*3 + [0.343]*3 (three groups
  at base^g); the keep-ratio loss (`pruning_losses.keep_ratio_loss`, batch mean: the paper's
  "dynamic rate") averaged over gates. ImageNet recipe (supplement A): from DeiT-S weights,
  AdamW, 30 epochs, lr = batch/512 x 1e-5 (as printed there), batch 1024 on 4 V100s.

Budget (`kept_ratio=`): gate g of group j (the gates split into `groups` equal consecutive
groups, 3 in the paper) keeps the top-k of ALL N patches by keep probability,
k = round(N · kept_ratio^((j+1)/groups)) (at least 1), ties toward the lowest index; the last
group keeps round(N · kept_ratio), the reported kept ratio.

Cost (`svit_macs`, one formula for the forward's report and the prediction): ungated blocks at
N + 1 tokens; a gated block costs its gate on all N patches plus the block at k + 1 tokens,
k the patches that gate kept.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import flops
from .block_adapter import block_forward, sdpa_attend
from .budget import check_fraction
from .merging import unmerged
from .pruning_losses import budget_keep, gumbel_keep
from .ragged import run_blocks
from .spvit import PruneRun, check_stages


class SViTGate(nn.Module):
    """SViT's gate: (B, n, D) -> (B, n, 2) log-probabilities [keep, prune]."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = max(dim // 4, 1) if hidden is None else hidden
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x)))).log_softmax(dim=-1)


def gate_macs(num_tokens: torch.Tensor | int, dim: int, hidden: int | None = None):
    """MACs of `SViTGate` on n tokens: D·D/4 + D/4·2 per token."""
    hidden = max(dim // 4, 1) if hidden is None else hidden
    return num_tokens * (dim * hidden + hidden * 2)


def svit_blocks(depth: int) -> list[int]:
    """The reference placement: a gate before every block from the 4th on ([3..11] for 12)."""
    return list(range(depth // 4, depth))


def svit_targets(gates: int, base: float = 0.7, groups: int = 3) -> list[float]:
    """Per-gate keep targets: base^(j+1) for the gates of group j ([0.7]*3 + [0.49]*3 +
    [0.343]*3 for 9 gates)."""
    return [base ** (j + 1) for j in _gate_groups(gates, groups)]


def _gate_groups(gates: int, groups: int) -> list[int]:
    """Group index of each gate: `groups` consecutive, as equal as possible."""
    groups = min(groups, gates)
    return [g * groups // gates for g in range(gates)]


def budget_counts(num_patches: int, gates: int, kept_ratio: float, groups: int = 3) -> list[int]:
    """Patches each gate keeps at a kept-ratio budget: round(N · r^((j+1)/G)), at least 1."""
    check_fraction(kept_ratio)
    G = min(groups, gates)
    return [max(round(num_patches * kept_ratio ** ((j + 1) / G)), 1)
            for j in _gate_groups(gates, groups)]


def svit_macs(num_patches: int, depth: int, gate_blocks: Sequence[int],
              kept: torch.Tensor | Sequence[int], *, dim: int, mlp_ratio: float,
              hidden: int | None = None) -> torch.Tensor:
    """(B,) float64 MACs of the blocks and gates, kept (B, G) or (G,): patches each gate kept.
    run_svit reports it; the method table predicts with it."""
    kept = torch.as_tensor(kept, dtype=torch.float64)
    kept = kept.reshape(-1, kept.shape[-1])  # (B, G)
    gates = check_stages(gate_blocks, depth, kept.shape[1])
    macs = torch.full(kept.shape[:1], float((depth - len(gates)) * flops.block_macs(
        num_patches + 1, dim, mlp_ratio)), dtype=torch.float64)
    for g in range(len(gates)):
        macs = macs + gate_macs(num_patches, dim, hidden) + flops.block_macs(kept[:, g] + 1, dim, mlp_ratio)
    return macs


def svit_budget_macs(num_patches: int, depth: int, gate_blocks: Sequence[int], kept_ratio: float,
                     *, dim: int, mlp_ratio: float, groups: int = 3,
                     hidden: int | None = None) -> float:
    """MACs at a kept-ratio budget without a forward."""
    counts = budget_counts(num_patches, len(gate_blocks), kept_ratio, groups)
    return float(svit_macs(num_patches, depth, gate_blocks, counts, dim=dim, mlp_ratio=mlp_ratio,
                           hidden=hidden)[0])


def run_svit(blocks: Sequence[nn.Module], cls: torch.Tensor, patches: torch.Tensor,
             gates: Sequence[nn.Module], *, gate_blocks: Sequence[int], train: bool,
             kept_ratio: float | None = None, groups: int = 3, mlp_ratio: float = 4.0,
             generator: torch.Generator | None = None, tau: float = 1.0,
             mode: str = "packed") -> PruneRun:
    """SViT over `blocks`: cls (B, 1, D), patches (B, N, D) -> PruneRun.

    gates: one per gated block (`SViTGate`, or any module mapping (B, N, D) to (B, N, 2)
    log-probabilities [keep, prune]). train: Gumbel samples, masked keys, M ⊙ block + (1 - M) ⊙ x;
    else hard decisions (or the budget's top-k, `kept_ratio`), kept rows packed per block.

    Reported per gate: scores = p(keep) of every patch, keep = the patches that gate's block
    processed, decisions = keep as float (ST gradient in training), kept = their count.
    tokens: all N patches at their positions (nothing leaves the sequence), so keep[-1].mean()
    is the fraction the last block processed.
    """
    if train and kept_ratio is not None:
        raise ValueError("run_svit: kept_ratio is an evaluation budget; training samples the "
                         "gates' decisions (train=True, kept_ratio=None)")
    depth = len(blocks)
    gate_at = {b: g for g, b in enumerate(check_stages(gate_blocks, depth, len(gates)))}
    B, N, D = patches.shape
    targets = budget_counts(N, len(gates), kept_ratio, groups) if kept_ratio is not None else None
    x = torch.cat([cls, patches], dim=1)  # (B, 1 + N, D)
    scores, keep, decisions, kept = [], [], [], []
    for i, blk in enumerate(blocks):
        if i not in gate_at:
            x = blk(x)
            continue
        g = gate_at[i]
        log_probs = gates[g](x[:, 1:])  # (B, N, 2): every patch, pruned ones included
        if train:
            m = gumbel_keep(log_probs, tau=tau, generator=generator)  # (B, N) float 0/1, ST
            alive = m.detach() > 0.5
            key_mask = torch.cat([alive.new_ones(B, 1), alive], dim=1)[:, None, None, :]  # (B,1,1,L)
            y = block_forward(blk, x, sdpa_attend(blk.attn, key_mask))
            M = torch.cat([m.new_ones(B, 1), m], dim=1).unsqueeze(-1)  # (B, L, 1): cls always
            x = M * y + (1.0 - M) * x
        else:
            if targets is not None:
                k = torch.full((B,), targets[g], dtype=torch.long, device=x.device)
                alive = budget_keep(log_probs[..., 0].detach(), torch.ones_like(log_probs[..., 0], dtype=torch.bool), k)
            else:
                alive = log_probs[..., 0] > log_probs[..., 1]
            m = alive.to(x.dtype)
            x = _run_kept(blk, x, alive, mode)
        scores.append(log_probs[..., 0].exp())
        keep.append(alive)
        decisions.append(m)
        kept.append(alive.sum(dim=1))
    hidden = gates[0].fc1.out_features if isinstance(gates[0], SViTGate) else None
    macs = svit_macs(N, depth, list(gate_at), torch.stack(kept, dim=1).cpu(), dim=D,
                     mlp_ratio=mlp_ratio, hidden=hidden)
    return PruneRun(cls=x[:, :1], tokens=unmerged(x[:, 1:]), macs=macs, scores=scores, keep=keep,
                    decisions=decisions, kept=kept)


def reactivated(keep: Sequence[torch.Tensor]) -> torch.Tensor:
    """Patches a later gate brought back: pruned at some gate, processed again by a later one.
    keep: per gate (B, N) bool (`PruneRun.keep`, `ReductionOutput.keep`) -> (B, N) bool."""
    pruned_before = torch.zeros_like(keep[0])
    back = torch.zeros_like(keep[0])
    for k in keep:
        back |= k & pruned_before
        pruned_before |= ~k
    return back


def _run_kept(blk: nn.Module, x: torch.Tensor, alive: torch.Tensor, mode: str) -> torch.Tensor:
    """One block on the kept patches of each sample (and cls); the others pass through.
    x (B, 1 + N, D), alive (B, N) bool -> (B, 1 + N, D)."""
    B, L, D = x.shape
    patches = x[:, 1:]
    order = (~alive).to(torch.int8).argsort(dim=1, stable=True)  # kept first, in their order
    counts = alive.sum(dim=1)
    m = int(counts.max())
    idx = order[:, :m]  # (B, m): kept patches, then (padding) pruned ones
    valid = torch.arange(m, device=x.device) < counts[:, None]  # (B, m)
    rows = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, D))
    out = run_blocks([blk], torch.cat([x[:, :1], rows], dim=1), None if bool(valid.all()) else valid,
                     mode=mode)
    # write the kept rows back; padding rows write back the pruned tokens' own old values
    new_rows = torch.where(valid.unsqueeze(-1), out[:, 1:], rows)
    patches = patches.scatter(1, idx.unsqueeze(-1).expand(-1, -1, D), new_rows)
    return torch.cat([out[:, :1], patches], dim=1)


__all__ = ["SViTGate", "budget_counts", "gate_macs", "reactivated", "run_svit", "svit_blocks",
           "svit_budget_macs", "svit_macs", "svit_targets"]
