"""Running a group's blocks over a batch whose samples keep different numbers of tokens.

The sequence entering a group is `seq` (B, 1 + m, D): the cls token, then each sample's alive
tokens compacted to the front (`tokens.gather_kept`); `valid` (B, m) marks the real rows, None
when every sample has all m. The ways to run the blocks (`mode`):

    auto     (the default) packed where it gives what `Block.forward` gives (`can_pack`: no
             forward hooks on a block, its attention or its attention dropout, fused attention),
             else bucket

    pad      one call over the whole batch, padded rows masked out as keys (a boolean mask)
    bucket   sort the samples by kept count, cut them into buckets whose padding is worth less
             than another call (`bucket_plan`), run each bucket padded only to its own longest
             sample (no mask at all when its counts are equal), restore the batch order
    packed   no padding for the per-token layers: the real rows of all samples in one (L, D)
             tensor, on which the norms, linears and MLP (~12nD² of a block's 12nD² + 2n²D MACs)
             run as one big matrix product; only attention is gathered into padded
             (b, H, top, hd) buckets of similar lengths (`packed_layout`, masked where lengths
             differ) and back to packed rows. The fastest on CPU. The
             blocks' layers are called one by one (`packed_block`), not `Block.forward`, so
             forward hooks registered on a block do not fire in this mode (nor in jagged).
    jagged   packed rows, and attention on nested jagged tensors (`torch.nested`, SDPA): no
             padding anywhere. On CPU jagged SDPA is correct but slow (DESIGN.md); on CUDA it
             reaches the flash / memory-efficient kernels that a boolean mask rules out.

Each sample's result is the same in every mode (up to float rounding) and does not depend on the
other samples of the batch. Padding rows of the result are not meaningful (zeros for bucket and
packed). `checkpoint=True` recomputes each block's activations in the backward pass instead of
storing them (activation checkpointing, `torch.utils.checkpoint`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from . import block_adapter as ba
from .tokens import key_padding_mask

RAGGED_MODES = ("auto", "pad", "bucket", "packed", "jagged")


def check_ragged(mode: str) -> str:
    if mode not in RAGGED_MODES:
        raise ValueError(f"unknown ragged batching mode {mode!r}; choose one of {', '.join(RAGGED_MODES)}")
    return mode


def run_blocks(blocks: Sequence[nn.Module], seq: torch.Tensor, valid: torch.Tensor | None, *,
               mode: str = "bucket", checkpoint: bool = False,
               sample_cost: Callable[[int], float] | None = None,
               bucket_cost: float = 0.0) -> torch.Tensor:
    """seq (B, 1 + m, D), valid (B, m) bool or None -> (B, 1 + m, D).

    sample_cost(n): cost of one sample of n alive tokens through the blocks (e.g. block MACs);
    bucket_cost: the fixed cost of one more call, in the same unit (bucket mode only).
    """
    if valid is None:
        return _padded(blocks, seq, None, checkpoint)
    if mode == "auto":
        mode = "packed" if can_pack(blocks) else "bucket"
    if mode == "pad":
        return _padded(blocks, seq, key_padding_mask(valid), checkpoint)
    if mode in ("packed", "jagged"):
        return _packed(blocks, seq, valid, checkpoint, jagged=mode == "jagged")
    counts = valid.sum(1).tolist()
    plan = bucket_plan(counts, sample_cost or (lambda n: float(n)), bucket_cost)
    if len(plan) == 1:
        return _padded(blocks, seq, key_padding_mask(valid), checkpoint)
    m = seq.shape[1] - 1
    parts, order = [], []
    for members in plan:
        idx = torch.tensor(members, device=seq.device)
        top = max(counts[i] for i in members)
        sub_valid = valid[idx, :top]
        mask = None if min(counts[i] for i in members) == top else key_padding_mask(sub_valid)
        out = _padded(blocks, seq[idx, :1 + top], mask, checkpoint)  # (b, 1 + top, D)
        parts.append(F.pad(out, (0, 0, 0, m - top)))
        order += members
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(parts)[inverse.to(seq.device)]


def can_pack(blocks: Sequence[nn.Module]) -> bool:
    """Whether the packed path computes what the blocks' own forwards would, observably: it
    calls their layers one by one (`packed_block`), so forward hooks on a block, its attention
    or its attention dropout would not fire (the engine's tests and users' probes register
    such hooks), and a block with non-fused attention (probabilities materialized, e.g. for a
    subclass that reads them) is run as written."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return False
    for blk in blocks:
        if not ba.has_fused_attention(blk):
            return False
        attn = blk.attn
        for module in (blk, attn, getattr(attn, "attn_drop", None)):
            if module is not None and (module._forward_hooks or module._forward_pre_hooks):
                return False
    return True


def bucket_plan(counts: Sequence[int], sample_cost: Callable[[int], float],
                bucket_cost: float) -> list[list[int]]:
    """Split samples into buckets of consecutive kept counts at the least total cost.

    A bucket of b samples whose longest has n tokens costs b * sample_cost(n) + bucket_cost
    (padding makes every member as costly as the longest). Exact dynamic programme over the
    samples sorted by count, O(B²). Returns lists of sample indices, buckets in ascending count.
    """
    order = sorted(range(len(counts)), key=lambda i: counts[i])
    c = [counts[i] for i in order]
    best = [0.0] + [float("inf")] * len(c)  # best[j]: cheapest split of the j shortest samples
    cut = [0] * (len(c) + 1)
    for j in range(1, len(c) + 1):
        per_sample = sample_cost(c[j - 1])  # the longest of samples i..j-1 (sorted)
        for i in range(j):
            cost = best[i] + (j - i) * per_sample + bucket_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    plan, j = [], len(c)
    while j > 0:
        plan.append(order[cut[j]:j])
        j = cut[j]
    return plan[::-1]


def _padded(blocks, seq, mask, checkpoint: bool) -> torch.Tensor:
    for blk in blocks:
        if checkpoint:
            seq = _checkpoint(blk, seq, attn_mask=mask, use_reentrant=False)
        else:
            seq = blk(seq, attn_mask=mask)
    return seq


def _packed(blocks, seq, valid, checkpoint: bool, jagged: bool) -> torch.Tensor:
    keys = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)  # (B, 1 + m): cls is real
    layout = packed_layout(keys, jagged=jagged)
    flat = seq.flatten(0, 1)  # (B * (1 + m), D)
    x = flat.index_select(0, layout.rows)  # (L, D), sample after sample, cls first in each
    for blk in blocks:
        if checkpoint:
            # Reentrant: the non-reentrant kind's saved-tensor hooks cannot take nested tensors.
            x = _checkpoint(packed_block, blk, x, layout, use_reentrant=True)
        else:
            x = packed_block(blk, x, layout)
    return torch.zeros_like(flat).index_copy(0, layout.rows, x).view_as(seq)


# One more attention call (a padded SDPA over a bucket of samples, packed mode) is worth it when
# it saves more padded attention than one sample of this many tokens costs (n² per sample).
ATTENTION_CALL_TOKENS = 48


class AttentionBucket(NamedTuple):
    """Samples whose attention runs as one padded SDPA call (packed mode, not jagged)."""
    index: torch.Tensor  # (b, top) long: packed row of each (sample, position); padding
    #                      positions repeat the sample's first row (masked out as keys)
    mask: torch.Tensor | None  # (b, 1, 1, top) bool, True = real key; None: equal lengths


class PackedLayout(NamedTuple):
    """Where each sample's rows are in a packed (L, D) tensor."""
    keys: torch.Tensor  # (B, 1 + m) bool: real rows of the padded layout, row-major = packed order
    lengths: torch.Tensor  # (B,) rows per sample (cls included)
    offsets: torch.Tensor  # (B + 1,) cumulative lengths
    max_len: int
    jagged: bool  # attention on nested jagged tensors (else padded buckets)
    rows: torch.Tensor  # (L,) long: flat (B * (1 + m)) position of each packed row
    buckets: tuple[AttentionBucket, ...]  # attention calls (not jagged)
    back: torch.Tensor  # (L,) long: each packed row's place in the buckets' outputs, concatenated


def packed_layout(keys: torch.Tensor, *, jagged: bool = False,
                  call_tokens: int | None = None) -> PackedLayout:
    """The layout of the real rows `keys` (B, 1 + m) bool (a prefix of each row), built once per
    group. Attention buckets: `bucket_plan` over the lengths with cost n² per sample and
    call_tokens² per call (padding in a bucket costs its longest member's attention; default
    ATTENTION_CALL_TOKENS)."""
    call_tokens = ATTENTION_CALL_TOKENS if call_tokens is None else call_tokens
    lengths = keys.sum(1)  # (B,)
    offsets = F.pad(lengths.cumsum(0), (1, 0))  # sample b: packed rows offsets[b]:offsets[b+1]
    counts = lengths.tolist()
    plan = [] if jagged else bucket_plan(counts, lambda n: float(n * n), float(call_tokens ** 2))
    pos = torch.arange(max(counts), device=keys.device)
    back = torch.empty(int(offsets[-1]), dtype=torch.long, device=keys.device)
    buckets, start = [], 0
    for members in plan:
        idx = torch.tensor(members, device=keys.device)
        n, first = lengths[idx], offsets[idx]  # (b,)
        top = max(counts[i] for i in members)
        real = pos[:top] < n[:, None]  # (b, top)
        index = torch.where(real, first[:, None] + pos[:top], first[:, None])  # (b, top)
        back[index[real]] = start + real.flatten().nonzero().squeeze(1)
        mask = None if min(counts[i] for i in members) == top else real[:, None, None, :]
        buckets.append(AttentionBucket(index=index, mask=mask))
        start += len(members) * top
    return PackedLayout(keys=keys, lengths=lengths, offsets=offsets, max_len=max(counts),
                        jagged=jagged, rows=keys.flatten().nonzero().squeeze(1),
                        buckets=tuple(buckets), back=back)


def packed_block(blk: nn.Module, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """timm `Block.forward` on packed rows x (L, D): the block read through `block_adapter`,
    attention per sample (`packed_attend`), stochastic depth drawn per sample."""
    def drop(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return _drop_path(module, y, layout.lengths)

    x = ba.attention_half(blk, x, packed_attend(blk.attn, layout), drop=drop)
    return ba.mlp_half(blk, x, drop=drop)


def packed_attention(attn: nn.Module, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """timm `Attention.forward` on packed rows x (L, D), each sample attending only to itself."""
    q, k, v = ba.qkv_heads(attn, x)  # (L, H, hd) each
    return ba.attention_output(attn, packed_attend(attn, layout)(q, k, v), x)


def packed_attend(attn: nn.Module, layout: PackedLayout) -> ba.Attend:
    """The attention core on packed rows: q, k, v (L, H, hd) -> (L, H, hd), each sample's rows
    attending only to that sample's keys (padded buckets, or nested jagged SDPA)."""
    dropout = ba.dropout_p(attn)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if layout.jagged:
            def nested(t: torch.Tensor) -> torch.Tensor:  # (L, H, hd) -> (B, H, j, hd), j jagged
                return torch.nested.nested_tensor_from_jagged(
                    t.contiguous(), layout.offsets, min_seqlen=1,
                    max_seqlen=layout.max_len).transpose(1, 2)

            out = F.scaled_dot_product_attention(nested(q), nested(k), nested(v), dropout_p=dropout)
            return out.transpose(1, 2).values()  # (L, H, hd): back to packed rows
        parts = []
        for bucket in layout.buckets:  # (L, H, hd) -> (b, H, top, hd) by one gather each
            qb, kb, vb = (t[bucket.index].transpose(1, 2) for t in (q, k, v))
            o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bucket.mask, dropout_p=dropout)
            parts.append(o.transpose(1, 2).flatten(0, 1))  # (b * top, H, hd)
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).index_select(0, layout.back)
    return attend


def _drop_path(module: nn.Module, y: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """timm `DropPath` (one Bernoulli per sample) on packed rows: the sample's draw on each row."""
    p = float(getattr(module, "drop_prob", 0.0))
    if not (module.training and p > 0.0):
        return y
    keep = y.new_empty(lengths.shape[0]).bernoulli_(1.0 - p)  # (B,), as timm draws (B, 1, 1)
    if getattr(module, "scale_by_keep", True):
        keep = keep / (1.0 - p)
    return y * keep.repeat_interleave(lengths, output_size=y.shape[0]).unsqueeze(-1)
