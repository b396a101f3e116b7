"""Analytic cost in multiply-accumulates (MACs), the papers' "FLOPs" convention (DeiT-S = 4.6 G).

Only matrix products are counted (linear layers, attention products, the patch-embedding conv),
as fvcore and the papers do; normalization, activations and softmax are free. A block over n
tokens (cls included) of width D with MLP ratio r costs
    qkv 3nD² + proj nD² + QKᵀ n²D + AV n²D + MLP 2rnD²  =  (4 + 2r)·n·D² + 2·n²·D,
i.e. 12nD² + 2n²D for r = 4, the formula in DESIGN.md.
ToMe and EViT reduce inside a block (after attention, before the MLP), so their blocks cost
`attention_macs` at the tokens entering and `mlp_macs` at the tokens leaving; the averages that
merge or fuse tokens are scatter-adds (elementwise) and free, like the papers' counters.
"""
from __future__ import annotations

import torch


def attention_macs(num_tokens: torch.Tensor | int, dim: int):
    """The attention half of a block over n tokens: qkv 3nD² + QKᵀ n²D + AV n²D + proj nD²."""
    n = num_tokens
    return 4 * n * dim * dim + 2 * n * n * dim


def mlp_macs(num_tokens: torch.Tensor | int, dim: int, mlp_ratio: float = 4.0):
    """The MLP half of a block over n tokens: two linear layers, 2rnD²."""
    return 2 * mlp_ratio * num_tokens * dim * dim


def block_macs(num_tokens: torch.Tensor | int, dim: int, mlp_ratio: float = 4.0):
    """MACs of one ViT block; works elementwise on a tensor of per-sample token counts."""
    return attention_macs(num_tokens, dim) + mlp_macs(num_tokens, dim, mlp_ratio)


def patch_embed_macs(num_patches: int, patch_size: int, in_chans: int, dim: int) -> int:
    return num_patches * in_chans * patch_size * patch_size * dim


def interpreter_macs(num_tokens: torch.Tensor | int, dim: int, heads: int):
    """Multi-head interpreter (Eq. 1, F_k(P) folded into F_q; interpreter.py) on n tokens:
    F_k on the policy token (D²), the folded weights W_q,hᵀ k_h (D²) and biases b_q,h·k_h (D),
    then one (D -> H) product per token (nDH)."""
    return num_tokens * dim * heads + 2 * dim * dim + dim


def attention_selector_macs(num_tokens: torch.Tensor | int, dim: int):
    """cls query + keys of all tokens + the cls row of QKᵀ (num_tokens includes cls)."""
    return dim * dim + num_tokens * dim * dim + num_tokens * dim


def tome_matching_macs(num_a: int, num_b: int, head_dim: int) -> int:
    """ToMe's bipartite similarity: (|A|, c) @ (c, |B|) over head-mean keys of width c."""
    return num_a * num_b * head_dim


def cls_attention_macs(num_tokens: torch.Tensor | int, dim: int):
    """EViT's cls attention row: the cls query against every key, all heads (H·n·hd = nD).

    The block's own attention runs fused (SDPA) and does not return its probabilities, so the
    cls row is computed once more; num_tokens includes cls."""
    return num_tokens * dim


def dense_vit_gmacs(*, num_patches: int, dim: int, depth: int, num_classes: int,
                    patch_size: int = 16, in_chans: int = 3, mlp_ratio: float = 4.0) -> float:
    """Closed form for a ViT that keeps every token: handy for docs, tests and benchmarks."""
    n = num_patches + 1
    macs = (patch_embed_macs(num_patches, patch_size, in_chans, dim)
            + depth * block_macs(n, dim, mlp_ratio) + dim * num_classes)
    return macs / 1e9
