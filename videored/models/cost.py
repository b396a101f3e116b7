"""The one cost chain of a forward, in MACs: used by the model's own count as it runs
(`TokenReductionViT.forward_features`) and by the prediction without a forward (`topk_gmacs`,
`reducer_gmacs`, hence GMACs-matched budgets). Formulas per layer are in `flops.py`.

    GMACs = embed_macs + Σ_groups group_macs(scoring, kept) + head_macs     (selecting methods)
    GMACs = embed_macs + reduce_macs(kept_ratio) + head_macs                (in-block reducers)

where a group costs its selector's scoring at the alive count plus its L blocks at the kept
count + cls. Every quantity is per sample, float64 (exact integers far below 2**53).
"""
from __future__ import annotations

import torch

from . import flops
from .selectors import num_to_keep


def embed_macs(model) -> float:
    """The patch embedding's convolution over the model's N patches."""
    return float(flops.patch_embed_macs(model.num_patches, model.patch_size,
                                        model.embed.patch_embed.proj.in_channels, model.embed_dim))


def head_macs(model) -> int:
    """The classification head (one linear layer on the cls features)."""
    return model.embed_dim * model.num_classes


def group_macs(scoring: torch.Tensor, kept: torch.Tensor, blocks: int, dim: int,
               mlp_ratio: float) -> torch.Tensor:
    """(B,) MACs of one group: its selection's scoring cost (B,) and its `blocks` blocks over
    the `kept` (B,) patch tokens plus cls."""
    return scoring + blocks * flops.block_macs(kept.double() + 1, dim, mlp_ratio)


def to_gmacs(macs: torch.Tensor) -> torch.Tensor:
    """(B,) float64 MACs of the body -> (B,) float32 GMACs as `ReductionOutput.gflops` reports."""
    return (macs / 1e9).float()


def topk_gmacs(model, method, setting: torch.Tensor) -> torch.Tensor:
    """(B,) GMACs of a top-k method at per-selection keep rate `setting` (B,), without running
    the model: the model's own rule (num_to_keep per selection) through `group_macs`."""
    rate = setting.cpu()
    N, dim = model.num_patches, model.embed_dim
    depth = len(model.blocks) // model.groups
    alive = torch.full(rate.shape, N, dtype=torch.long)
    macs = torch.full(rate.shape, embed_macs(model), dtype=torch.float64)
    for _ in range(model.groups):
        scoring = method.scoring_macs(alive.double(), dim)
        alive = num_to_keep(alive, rate)
        macs = macs + group_macs(scoring, alive, depth, dim, model.mlp_ratio)
    return to_gmacs(macs + head_macs(model))


def reducer_gmacs(model, method, kept_ratio: torch.Tensor) -> torch.Tensor:
    """(B,) GMACs of an in-block reducer at kept_ratio (B,): patch embed + its own block cost
    formula (`Method.reduce_macs`, one value per distinct ratio) + head; no forward."""
    ratios = kept_ratio.cpu().tolist()
    costs = {r: method.reduce_macs(model, r) for r in set(ratios)}
    macs = torch.tensor([embed_macs(model) + costs[r] for r in ratios], dtype=torch.float64)
    return to_gmacs(macs + head_macs(model))


__all__ = ["embed_macs", "group_macs", "head_macs", "reducer_gmacs", "to_gmacs", "topk_gmacs"]
