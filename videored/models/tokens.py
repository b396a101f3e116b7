"""Token bookkeeping for real token removal: pure functions, no module state.

A reduced sequence is a `TokenSet`:
    x      (B, n, D)  patch tokens still alive, in their original order (cls is kept apart)
    index  (B, n)     original patch position of each row (0..N-1)
    valid  (B, n)     False on padding rows; None when every row is real (the common, fast case)

Samples in a batch may keep different numbers of tokens. Kept tokens are gathered to the front
(original order preserved) and the batch is padded to its longest sample; padded rows are masked
out as attention keys, so a sample's result does not depend on what else is in the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenSet:
    x: torch.Tensor  # (B, n, D)
    index: torch.Tensor  # (B, n) long
    valid: torch.Tensor | None  # (B, n) bool, or None when nothing is padded

    @property
    def valid_mask(self) -> torch.Tensor:
        """(B, n) bool, materialized."""
        if self.valid is None:
            return torch.ones(self.index.shape, dtype=torch.bool, device=self.index.device)
        return self.valid

    def counts(self) -> torch.Tensor:
        """(B,) number of real tokens per sample."""
        if self.valid is None:
            return torch.full((self.x.shape[0],), self.x.shape[1], device=self.x.device)
        return self.valid.sum(1)


def full_token_set(x: torch.Tensor) -> TokenSet:
    """All N patch tokens of x (B, N, D), nothing dropped yet."""
    B, N, _ = x.shape
    index = torch.arange(N, device=x.device).expand(B, N)
    return TokenSet(x=x, index=index, valid=None)


def gather_kept(tokens: TokenSet, keep: torch.Tensor) -> TokenSet:
    """Remove the tokens where `keep` (B, n) is False; keep-all returns `tokens` itself.

    Rows are compacted to the front in their original order, then the batch is cut to the longest
    sample's count m; shorter samples are padded (valid=False).
    """
    keep = keep & tokens.valid_mask
    if tokens.valid is None and bool(keep.all()):
        return tokens  # do-nothing path
    counts = keep.sum(1)  # (B,)
    m = int(counts.max())
    # A stable sort on "dropped" puts kept rows first without reordering them.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :m]  # (B, m)
    rows = torch.arange(keep.shape[0], device=keep.device)[:, None]  # (B, 1)
    # Row indexing copies whole D-rows (~2.5x faster on CPU than gather's per-element index).
    x = tokens.x[rows, order]  # (B, m, D)
    index = tokens.index[rows, order]  # (B, m)
    valid = torch.arange(m, device=keep.device).unsqueeze(0) < counts.unsqueeze(1)  # (B, m)
    return TokenSet(x=x, index=index, valid=None if bool(valid.all()) else valid)


def scatter_to_positions(values: torch.Tensor, tokens: TokenSet, num_patches: int,
                         fill: float = 0.0) -> torch.Tensor:
    """Place per-row values (B, n) at their original positions in a (B, N) tensor.

    Positions no longer alive get `fill`. Indices within a row are unique (gathers only ever take
    a prefix of a permutation), and padding rows point at dropped positions, so one scatter with
    padding rows set to `fill` is exact.
    """
    out = values.new_full((values.shape[0], num_patches), fill)
    return out.scatter(1, tokens.index, values.masked_fill(~tokens.valid_mask, fill))


def key_padding_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """Boolean attention mask (B, 1, 1, 1 + n), True where a key takes part; None when unpadded.

    The leading column is the cls token, which is always real. Boolean masks work with SDPA and
    with timm's non-fused path, and under bf16 autocast (no dtype to match).
    """
    if valid is None:
        return None
    keys = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)  # (B, 1 + n)
    return keys[:, None, None, :]
