"""The multi-head interpreter (paper Eq. 1).

    I_i = 1/H * sum_h sigmoid( F_q^h(X_i) . F_k^h(P) )

X_i a patch token entering the group, P a learned policy token, F_q / F_k per-head linear maps.
F_q is preceded by a LayerNorm: group inputs are un-normalized residual streams, and every timm
block normalizes before its projections for the same reason.

F_k(P) does not depend on the tokens, so it is folded into F_q. With F_q^h(y) = W_q,h y + b_q,h
(W_q,h the hd rows of head h) and k_h = F_k^h(P):

    F_q^h(y) . k_h = y . (W_q,hᵀ k_h) + b_q,h . k_h

so one (D, H) matrix and an (H,) bias, computed once per call, score every token with D·H MACs
instead of the D² of F_q (ViT-B: 64x fewer). Same parameters (`query`, `key`, `policy_token`,
`norm`) and state_dict keys as the unfolded form; gradients reach all of them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_

from .flops import interpreter_macs


class MultiHeadInterpreter(nn.Module):
    def __init__(self, dim: int, num_heads: int, threshold: float = 0.5,
                 init_keep_prob: float = 0.5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"interpreter dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.threshold = threshold
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)  # F_q for all heads at once: (D) -> (H * hd)
        self.key = nn.Linear(dim, dim)  # F_k applied to the policy token
        self.policy_token = nn.Parameter(torch.zeros(1, dim))
        trunc_normal_(self.policy_token, std=0.02)
        self.init_keep_prob = init_keep_prob

    def init_biases(self) -> None:
        """Set the biases so every score starts near `init_keep_prob` (weights untouched).

        With q = W_q x + b_q and k = W_k P + b_k, constant biases b_q = s, b_k = ±s per channel
        make q·k ≈ ±s²·hd = logit(init_keep_prob) per head while W_q, W_k, P are small. The
        default 0.5 gives zero biases (the plain init). A low start (e.g. 0.15) makes random
        samples drop informative tokens often enough for REINFORCE to see which ones matter.
        """
        logit = math.log(self.init_keep_prob / (1 - self.init_keep_prob))
        scale = math.sqrt(abs(logit) / self.head_dim)
        with torch.no_grad():
            self.query.bias.fill_(scale)
            self.key.bias.fill_(math.copysign(scale, logit))

    def folded_query(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (W (H, D), b (H,)) with F_q^h(y) . F_k^h(P) = W[h] . y + b[h] for every y."""
        H, hd = self.num_heads, self.head_dim
        k = self.key(self.policy_token).view(H, 1, hd)  # k_h = F_k^h(P): (H, 1, hd)
        weight = (k @ self.query.weight.view(H, hd, -1)).squeeze(1)  # W_q,hᵀ k_h: (H, D)
        bias = (k @ self.query.bias.view(H, hd, 1)).view(H)  # b_q,h . k_h: (H,)
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n, D) -> informative scores I (B, n) in (0, 1)."""
        weight, bias = self.folded_query()
        per_head = F.linear(self.norm(x), weight, bias)  # (B, n, H): F_q^h(X_i) . F_k^h(P)
        return per_head.sigmoid().mean(dim=-1)

    def decide(self, scores: torch.Tensor, sample: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep decisions (B, n) bool: Bernoulli(I) samples for training, else I >= threshold."""
        if sample:
            # Drawn on the CPU (global RNG or `generator`) so runs replay exactly on any device.
            u = torch.rand(scores.shape, generator=generator)
            return u.to(scores.device) < scores.detach()
        return scores >= self.threshold

    def macs(self, num_tokens: torch.Tensor | int):
        """Multiply-accumulates to score `num_tokens` tokens (`flops.interpreter_macs`)."""
        return interpreter_macs(num_tokens, self.query.in_features, self.num_heads)
