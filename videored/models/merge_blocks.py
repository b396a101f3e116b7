"""ToMe and EViT inside the block loop: a timm `Block` split at its two residual branches.

Both methods reduce between a block's attention and its MLP, so the block is run as
`attention_step` (timm's weights, SDPA, an optional additive bias, and the keys / cls attention
the methods read) then `mlp_step`. With nothing merged both steps compute exactly timm's
`Block.forward` (tested against it).

`run_tome` / `run_evit`: cls (B, 1, D), patches (B, N, D) -> `MergeRun`. Every sample of a batch
reduces to the same number of rows (ToMe's r and EViT's k depend on N only), so no padding is
needed and each sample's result does not depend on its batch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from timm.models.vision_transformer import Block

from . import block_adapter as ba
from . import flops
from .budget import warn_renamed
from .evit import attentive_rows, evit_blocks, evit_schedule, fusion_map
from .merging import MergedTokens, patch_sizes, positions, regroup, unmerged
from .tome import bipartite_soft_matching, tome_schedule


@dataclass
class MergeRun:
    """cls (B, 1, D) and tokens after the last block; macs per sample (same for all);
    scores / keep: (B, N) per reported stage (see run_tome / run_evit)."""
    cls: torch.Tensor
    tokens: MergedTokens
    macs: float
    scores: list[torch.Tensor]
    keep: list[torch.Tensor]


def attention_step(block: Block, seq: torch.Tensor, *, log_size: torch.Tensor | None = None,
                   want_keys: bool = False, want_cls_attn: bool = False):
    """seq (B, L, D), cls first -> (seq + attention branch, keys, cls_attn).

    log_size (B, L-1): added to the attention logits of the patch keys (ToMe's proportional
    attention; cls has size 1). keys (B, L, hd): the block's keys, mean over heads.
    cls_attn (B, L-1): softmax row of the cls query, cls->cls dropped, mean over heads.
    The block is read through `block_adapter` (gated attention included).
    """
    B = seq.shape[0]
    bias = None
    if log_size is not None:  # (B, 1, 1, L), float: SDPA adds it to every query's logits
        bias = torch.cat([log_size.new_zeros(B, 1), log_size], 1)[:, None, None, :].to(seq.dtype)
    seen: dict[str, torch.Tensor] = {}

    def attend(q, k, v):  # (B, L, H, hd) each: fused SDPA, keeping q and k for the methods
        seen["q"], seen["k"] = q, k
        return ba.sdpa_attend(block.attn, bias)(q, k, v)

    seq = ba.attention_half(block, seq, attend)
    q, k = seen["q"], seen["k"]
    keys = k.mean(dim=2) if want_keys else None  # (B, L, hd)
    cls_attn = None
    if want_cls_attn:
        logits = ba.attention_logits(block.attn, q[:, :1], k, bias)  # (B, H, 1, L)
        cls_attn = logits.softmax(dim=-1)[:, :, 0, 1:].mean(dim=1)  # (B, L-1)
    return seq, keys, cls_attn


def mlp_step(block: Block, seq: torch.Tensor) -> torch.Tensor:
    return ba.mlp_half(block, seq)


def _renamed(kept_ratio: float | None, keep_ratio: float | None, where: str) -> float:
    """kept_ratio, or its deprecated name keep_ratio (warns once)."""
    if keep_ratio is not None:
        if kept_ratio is not None:
            raise TypeError(f"{where}: give kept_ratio only (keep_ratio is its old name)")
        warn_renamed("keep_ratio", "kept_ratio", where)
        return keep_ratio
    if kept_ratio is None:
        raise TypeError(f"{where}: missing kept_ratio")
    return kept_ratio


def _split(seq: torch.Tensor, tokens: MergedTokens) -> tuple[torch.Tensor, MergedTokens]:
    """(B, 1 + n, D) -> cls (B, 1, D) and `tokens` with the new rows (bookkeeping unchanged)."""
    return seq[:, :1], replace(tokens, x=seq[:, 1:])


def _snapshot_blocks(depth: int, groups: int) -> set[int]:
    """The last block of each of `groups` equal groups: where ToMe reports its state."""
    per = depth // groups
    return {(j + 1) * per - 1 for j in range(groups)}


def tome_macs(num_patches: int, schedule: list[int], dim: int, head_dim: int,
              mlp_ratio: float) -> float:
    """MACs of the blocks under ToMe with r per block `schedule` (cls included in every count):
    attention at the rows entering, the bipartite similarity where r > 0, MLP at the rows left.
    The single cost formula of ToMe: run_tome reports it, the method table predicts with it."""
    macs, n = 0.0, num_patches
    for r in schedule:
        macs += flops.attention_macs(n + 1, dim)
        if r > 0:
            macs += flops.tome_matching_macs((n + 1) // 2, n // 2, head_dim)
            n -= min(r, n // 2)
        macs += flops.mlp_macs(n + 1, dim, mlp_ratio)
    return macs


def evit_macs(num_patches: int, depth: int, targets: dict[int, int], dim: int,
              mlp_ratio: float) -> float:
    """MACs of the blocks under EViT with `targets` {block: attentive rows k} (cls included):
    attention at the rows entering, the cls attention row where a stage shrinks the sequence,
    MLP at the rows left. run_evit reports it, the method table predicts with it."""
    macs, n = 0.0, num_patches
    for i in range(depth):
        macs += flops.attention_macs(n + 1, dim)
        if targets.get(i, n) + 1 < n:
            macs += flops.cls_attention_macs(n + 1, dim)
            n = targets[i] + 1  # the attentive rows and the fused one
        macs += flops.mlp_macs(n + 1, dim, mlp_ratio)
    return macs


def evit_targets(num_patches: int, depth: int, kept_ratio: float,
                 stage_blocks: list[int] | None = None) -> dict[int, int]:
    """{block: attentive rows k kept there} of EViT's stages at `kept_ratio` (see evit.py)."""
    stage_blocks = evit_blocks(depth) if stage_blocks is None else stage_blocks
    return dict(zip(stage_blocks, evit_schedule(num_patches, len(stage_blocks), kept_ratio)))


def run_tome(blocks: list[Block], cls: torch.Tensor, patches: torch.Tensor, *,
             kept_ratio: float | None = None, mlp_ratio: float, groups: int = 1,
             schedule: list[int] | None = None, keep_ratio: float | None = None) -> MergeRun:
    """ToMe over `blocks`; schedule: r per block (default `tome_schedule` of kept_ratio;
    keep_ratio: its old name).
    Reported after the last block of each of `groups` groups:
    scores = 1 / size of the row covering each patch (1: unmerged), keep = the positions the
    rows stand at (one per row, so keep.mean = rows / N)."""
    N, D = patches.shape[1], patches.shape[2]
    kept_ratio = _renamed(kept_ratio, keep_ratio, "run_tome")
    schedule = tome_schedule(N, len(blocks), kept_ratio) if schedule is None else schedule
    report = _snapshot_blocks(len(blocks), groups)
    tokens = unmerged(patches)
    scores, keep = [], []
    for i, (block, r) in enumerate(zip(blocks, schedule)):
        seq = torch.cat([cls, tokens.x], dim=1)
        seq, keys, _ = attention_step(block, seq, want_keys=r > 0,
                                      log_size=tokens.size.log() if tokens.merged else None)
        cls, tokens = _split(seq, tokens)
        if r > 0:
            match = bipartite_soft_matching(keys[:, 1:], r)
            tokens = regroup(tokens, match.row_map, tokens.index.gather(1, match.keep),
                             tokens.size, normalize=True)
        seq = mlp_step(block, torch.cat([cls, tokens.x], dim=1))
        cls, tokens = _split(seq, tokens)
        if i in report:
            scores.append(1.0 / patch_sizes(tokens))
            keep.append(positions(tokens, N))
    macs = tome_macs(N, schedule, D, blocks[0].attn.head_dim, mlp_ratio)
    return MergeRun(cls=cls, tokens=tokens, macs=macs, scores=scores, keep=keep)


def run_evit(blocks: list[Block], cls: torch.Tensor, patches: torch.Tensor, *,
             kept_ratio: float | None = None, mlp_ratio: float,
             stage_blocks: list[int] | None = None, keep_ratio: float | None = None) -> MergeRun:
    """EViT over `blocks`, reorganizing at `stage_blocks` (default `evit_blocks(depth)`).
    Reported at each stage: scores = the stage's cls attention of the row covering each patch,
    divided by its per-sample max; keep = the attentive patch positions (the fused row marks
    none, so keep.mean = attentive patches / N)."""
    N, D = patches.shape[1], patches.shape[2]
    kept_ratio = _renamed(kept_ratio, keep_ratio, "run_evit")
    targets = evit_targets(N, len(blocks), kept_ratio, stage_blocks)
    tokens = unmerged(patches)
    scores, keep = [], []
    for i, block in enumerate(blocks):
        n = tokens.x.shape[1]
        k = targets.get(i, n)
        select = k + 1 < n  # a stage that would not shrink the sequence keeps everything
        seq, _, cls_attn = attention_step(block, torch.cat([cls, tokens.x], dim=1),
                                          want_cls_attn=select)
        cls, tokens = _split(seq, tokens)
        if select:
            attentive = attentive_rows(cls_attn, k)
            row_map, kept = fusion_map(attentive)
            index = torch.cat([tokens.index.gather(1, kept),
                               tokens.index.new_full((len(kept), 1), -1)], dim=1)
            weight = torch.where(attentive, torch.ones_like(cls_attn), cls_attn)
            patch_attn = cls_attn.gather(1, tokens.source)  # (B, N)
            tokens = regroup(tokens, row_map, index, weight, normalize=False)
            scores.append(patch_attn / patch_attn.amax(dim=1, keepdim=True).clamp_min(1e-12))
            keep.append(positions(tokens, N))
        elif i in targets:  # a stage with nothing to do: alive patches score 1, as pass-through
            alive = positions(tokens, N)
            scores.append(alive.to(patches.dtype))
            keep.append(alive)
        seq = mlp_step(block, torch.cat([cls, tokens.x], dim=1))
        cls, tokens = _split(seq, tokens)
    macs = evit_macs(N, len(blocks), targets, D, mlp_ratio)
    return MergeRun(cls=cls, tokens=tokens, macs=macs, scores=scores, keep=keep)


__all__ = ["MergeRun", "attention_step", "evit_macs", "evit_targets", "mlp_step", "run_evit",
           "run_tome", "tome_macs"]
