"""The one module that reads timm's `Block` / `Attention` internals.

Every method that needs more than `Block.forward(x, attn_mask=...)` goes through here: the
in-block reducers (ToMe, EViT: they act between the attention and the MLP half), the packed
batches (attention per sample on packed rows), the attention scorer (the cls row only) and the
explanations (attention probabilities, gradients). When timm changes a block, this file changes
and nothing else does.

A block is read as its two residual halves, exactly as timm's `Block.forward` runs them:

    x = x + drop_path1(ls1(attn(norm1(x))))        `attention_half`
    x = x + drop_path2(ls2(mlp(norm2(x))))         `mlp_half`

and timm's `Attention.forward` as projection -> attention core -> output:

    q, k, v = qkv(h) split in heads, q_norm / k_norm     `qkv_heads`  (..., L, H, hd) each
    o = softmax(q kᵀ · scale + bias) v                   an `attend(q, k, v)` callable
    out = proj(norm(o) * sigmoid(gate(h)))                `attention_output`

The attention core is a parameter (`attend`), so each caller picks its own: fused SDPA with an
optional additive bias or boolean key mask (`sdpa_attend`), materialized probabilities
(`ExplicitAttend`: explanations, EViT's cls row), or per-sample buckets of packed rows
(`ragged.packed_attend`). Gated attention (timm >= 1.0.2x `Attention(gated=True)`) is supported
on every path; timm releases without `attn_dim` / `gate` are read with their defaults.

Tensors are token-major here, (..., L, H, hd), so packed rows (L, H, hd) and batches
(B, L, H, hd) share one code path; `heads_first` / `tokens_first` convert for SDPA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# attend(q, k, v) with q, k, v (..., L, H, hd) token-major -> (..., L, H, hd)
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# drop(module, y): how a DropPath module is applied to a residual branch y (packed rows draw per
# sample, `ragged._drop_path`); default: the module itself
Drop = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _module_drop(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    return module(y)


def attn_dim(attn: nn.Module) -> int:
    """H * hd (timm < 1.0.2x has no `attn_dim`; it is then dim = H * hd)."""
    return getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)


def heads_first(t: torch.Tensor) -> torch.Tensor:
    """(..., L, H, hd) -> (..., H, L, hd), the layout SDPA and matrix products take."""
    return t.transpose(-3, -2)


def tokens_first(t: torch.Tensor) -> torch.Tensor:
    """(..., H, L, hd) -> (..., L, H, hd)."""
    return t.transpose(-3, -2)


def qkv_heads(attn: nn.Module, h: torch.Tensor,
              parts: str = "qkv") -> tuple[torch.Tensor | None, ...]:
    """h (..., L, D), the block's norm1 output -> q, k, v, each (..., L, H, hd), with the
    block's q_norm / k_norm applied (they normalize the last dim, so the layout is free).

    parts: which of "q", "k", "v" to compute; the others are None (the attention scorer needs
    only the keys, and the cls query separately)."""
    H, hd = attn.num_heads, attn.head_dim
    if parts == "qkv":  # one matrix product, as timm runs it (the hot path)
        q, k, v = attn.qkv(h).unflatten(-1, (3, H, hd)).unbind(-3)
        return attn.q_norm(q), attn.k_norm(k), v
    inner = H * hd
    w, b = attn.qkv.weight, attn.qkv.bias
    out = []
    for i, name in enumerate("qkv"):
        if name not in parts:
            out.append(None)
            continue
        t = F.linear(h, w[i * inner:(i + 1) * inner], None if b is None else b[i * inner:(i + 1) * inner])
        t = t.unflatten(-1, (H, hd))
        if name == "q":
            t = attn.q_norm(t)
        elif name == "k":
            t = attn.k_norm(t)
        out.append(t)
    return tuple(out)


def attention_output(attn: nn.Module, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """o (..., L, H, hd) from the attention core, h (..., L, D) the attention's input ->
    (..., L, D): heads concatenated, the scale norm, the gate, proj and proj_drop."""
    y = attn.norm(o.flatten(-2)) if hasattr(attn, "norm") else o.flatten(-2)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        y = y * gate(h).sigmoid()
    return attn.proj_drop(attn.proj(y))


def dropout_p(attn: nn.Module) -> float:
    return attn.attn_drop.p if attn.training else 0.0


def sdpa_attend(attn: nn.Module, mask: torch.Tensor | None = None) -> Attend:
    """Fused attention (what timm runs): mask (B, 1|H, 1|L, L) boolean (True = real key) or an
    additive float bias; q, k, v batch-shaped (B, L, H, hd)."""
    def attend(q, k, v):
        o = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v),
                                           attn_mask=mask, dropout_p=dropout_p(attn))
        return tokens_first(o)
    return attend


def attention_logits(attn: nn.Module, q: torch.Tensor, k: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """q (B, Lq, H, hd), k (B, L, H, hd) -> (B, H, Lq, L) scaled logits (+ additive bias, or
    -inf where a boolean bias is False)."""
    logits = (heads_first(q) * attn.scale) @ heads_first(k).transpose(-2, -1)
    if bias is not None:
        logits = logits.masked_fill(~bias, float("-inf")) if bias.dtype == torch.bool \
            else logits + bias
    return logits


class ExplicitAttend:
    """An attention core that forms the probabilities (B, H, L, L) and keeps them in `.probs`
    (explanations read them, GradCAM-style methods differentiate through them). No attention
    dropout: explanations run in eval mode."""

    def __init__(self, attn: nn.Module, bias: torch.Tensor | None = None,
                 retain_grad: bool = False) -> None:
        self.attn, self.bias, self.retain_grad = attn, bias, retain_grad
        self.probs: torch.Tensor | None = None

    def __call__(self, q, k, v):
        probs = attention_logits(self.attn, q, k, self.bias).softmax(dim=-1)  # (B, H, L, L)
        if self.retain_grad and probs.requires_grad:
            probs.retain_grad()
        self.probs = probs
        return tokens_first(probs @ heads_first(v))


def attention_half(block: nn.Module, x: torch.Tensor, attend: Attend, *,
                   normed: torch.Tensor | None = None,
                   drop: Drop = _module_drop) -> torch.Tensor:
    """x (..., L, D) -> x + drop_path1(ls1(attention(norm1(x)))) with the core `attend`.

    normed: use this tensor as norm1(x) (GradCAM takes gradients with respect to it)."""
    attn = block.attn
    h = block.norm1(x) if normed is None else normed
    q, k, v = qkv_heads(attn, h)
    y = attention_output(attn, attend(q, k, v), h)
    return x + drop(block.drop_path1, block.ls1(y))


def mlp_half(block: nn.Module, x: torch.Tensor, *, drop: Drop = _module_drop) -> torch.Tensor:
    """x (..., L, D) -> x + drop_path2(ls2(mlp(norm2(x))))."""
    return x + drop(block.drop_path2, block.ls2(block.mlp(block.norm2(x))))


def block_forward(block: nn.Module, x: torch.Tensor, attend: Attend, *,
                  normed: torch.Tensor | None = None, drop: Drop = _module_drop) -> torch.Tensor:
    """timm `Block.forward` with the attention core `attend` (tested equal to timm's own)."""
    return mlp_half(block, attention_half(block, x, attend, normed=normed, drop=drop), drop=drop)


def cls_attention(block: nn.Module, seq: torch.Tensor,
                  key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Head-mean attention of the cls query (row 0) over the patch keys, as `block` would
    compute it on seq (B, L, D), cls first -> (B, L-1). Only the cls query and the keys are
    projected (the attention scorer's cost). key_mask (B, 1, 1, L) bool: True = real key."""
    attn = block.attn
    h = block.norm1(seq)
    q, _, _ = qkv_heads(attn, h[:, :1], parts="q")  # (B, 1, H, hd)
    _, k, _ = qkv_heads(attn, h, parts="k")  # (B, L, H, hd)
    probs = attention_logits(attn, q, k, key_mask).softmax(dim=-1)  # (B, H, 1, L)
    return probs[:, :, 0, 1:].mean(dim=1)


@dataclass
class BlockTrace:
    """Every intermediate of one block's forward, for relevance propagation (LRP walks them
    backwards). Shapes for x (B, L, D) with H heads of hd dims and an MLP of width M:"""
    x: torch.Tensor         # block input (B, L, D)
    h: torch.Tensor         # norm1(x), the qkv projection's input (B, L, D)
    q: torch.Tensor         # (B, L, H, hd), after q_norm
    k: torch.Tensor         # (B, L, H, hd), after k_norm
    v: torch.Tensor         # (B, L, H, hd)
    probs: torch.Tensor     # attention probabilities (B, H, L, L)
    proj_in: torch.Tensor   # heads concatenated (after the scale norm): proj's input (B, L, H*hd)
    attn_out: torch.Tensor  # the attention residual branch ls1(proj(...)) (B, L, D)
    mid: torch.Tensor       # x + attn_out (B, L, D)
    h2: torch.Tensor        # norm2(mid), fc1's input (B, L, D)
    hidden: torch.Tensor    # act(fc1(h2)), fc2's input (B, L, M)
    mlp_out: torch.Tensor   # the MLP residual branch ls2(fc2(hidden)) (B, L, D)
    out: torch.Tensor       # mid + mlp_out, the block output (B, L, D)


def lrp_linears(block: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    """(qkv, proj, fc1, fc2): the block's four linear maps, for blocks that relevance
    propagation can read as `linear -> attention -> linear` and `linear -> act -> linear`.

    Raises NotImplementedError for what the LRP rules of Chefer et al. (CVPR'21) do not cover:
    gated attention (a product with a sigmoid of the input), a norm inside the MLP, GLU MLPs."""
    attn, mlp = block.attn, block.mlp
    if getattr(attn, "gate", None) is not None:
        raise NotImplementedError("LRP through gated attention is not defined here")
    fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
    if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)) or \
            not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity) or \
            fc1.out_features != fc2.in_features:
        raise NotImplementedError("LRP needs a plain fc1 -> act -> fc2 MLP, got "
                                  f"{type(mlp).__name__}")
    return attn.qkv, attn.proj, fc1, fc2


def traced_block_forward(block: nn.Module, x: torch.Tensor, *,
                         retain_grad: bool = False) -> BlockTrace:
    """timm `Block.forward` on x (B, L, D) in eval mode (no dropout, no drop path), keeping every
    intermediate (`BlockTrace`). retain_grad: the probabilities keep their gradient (`.grad`
    after a backward), as attention-GradCAM and transformer attribution need."""
    if block.training:
        raise ValueError("traced_block_forward runs blocks in eval mode (call model.eval())")
    attn = block.attn
    _, _, fc1, fc2 = lrp_linears(block)
    h = block.norm1(x)
    q, k, v = qkv_heads(attn, h)
    attend = ExplicitAttend(attn, retain_grad=retain_grad)
    o = attend(q, k, v)  # (B, L, H, hd)
    proj_in = attn.norm(o.flatten(-2)) if hasattr(attn, "norm") else o.flatten(-2)
    attn_out = block.ls1(attn.proj(proj_in))
    mid = x + attn_out
    h2 = block.norm2(mid)
    hidden = block.mlp.act(fc1(h2))
    mlp_out = block.ls2(fc2(hidden))
    return BlockTrace(x=x, h=h, q=q, k=k, v=v, probs=attend.probs, proj_in=proj_in,
                      attn_out=attn_out, mid=mid, h2=h2, hidden=hidden, mlp_out=mlp_out,
                      out=mid + mlp_out)


def patch_embed_matrix(patch_embed: nn.Module) -> tuple[torch.Tensor, int]:
    """timm's `PatchEmbed` as the linear map it is on each flattened patch: (weight (D, C*p*p),
    p), inputs flattened in (channel, row, column) order; its bias is not returned (relevance
    rules leave it out). NotImplementedError unless a non-overlapping square conv without norm."""
    proj = getattr(patch_embed, "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size != proj.stride or \
            proj.kernel_size[0] != proj.kernel_size[1] or proj.padding != (0, 0) or \
            not isinstance(getattr(patch_embed, "norm", nn.Identity()), nn.Identity):
        raise NotImplementedError("relevance to pixels needs a plain non-overlapping patch conv")
    return proj.weight.flatten(1), proj.kernel_size[0]


def has_fused_attention(block: nn.Module) -> bool:
    """timm's attention runs fused SDPA (probabilities never formed)."""
    attn = getattr(block, "attn", None)
    return attn is not None and bool(getattr(attn, "fused_attn", False)) and hasattr(block, "ls1")


class PolicyAttend:
    """Attention core with a keep policy (DynamicViT / SPViT training): policy (B, L) float in
    {0, 1} (straight-through gradient allowed). Key j counts for query i with weight
    P_j + (1 - P_j)·[i = j]: pruned tokens are no key for others but still attend to
    themselves (their rows stay finite), so every kept row equals the gathered computation."""

    def __init__(self, attn: nn.Module, policy: torch.Tensor) -> None:
        self.attn, self.policy = attn, policy

    def __call__(self, q, k, v):
        logits = attention_logits(self.attn, q, k)  # (B, H, L, L)
        L = logits.shape[-1]
        p = self.policy.to(logits.dtype)[:, None, None, :]  # (B, 1, 1, L)
        eye = torch.eye(L, dtype=logits.dtype, device=logits.device)
        weight = p + (1.0 - p) * eye  # (B, 1, L, L)
        e = (logits - logits.amax(dim=-1, keepdim=True).detach()).exp() * weight
        probs = self.attn.attn_drop(e / e.sum(dim=-1, keepdim=True))
        return tokens_first(probs @ heads_first(v))


__all__ = ["Attend", "BlockTrace", "ExplicitAttend", "attention_half", "attention_logits",
           "attention_output", "attn_dim", "block_forward", "cls_attention", "dropout_p", "has_fused_attention",
           "heads_first", "lrp_linears", "PolicyAttend", "mlp_half", "patch_embed_matrix", "qkv_heads", "sdpa_attend", "tokens_first",
           "traced_block_forward"]
