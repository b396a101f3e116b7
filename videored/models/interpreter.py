"""The multi-head interpreter (paper Eq. 1).

    I_i = 1/H * sum_h sigmoid( F_q^h(X_i) . F_k^h(P) )

X_i a patch token entering the group, P a learned policy token, F_q / F_k per-head linear maps.
F_q is preceded by a LayerNorm: group inputs are un-normalized residual streams, and every timm
block normalizes before its projections for the same reason.
"""
from __future__ import annotations

import math

import torch
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n, D) -> informative scores I (B, n) in (0, 1)."""
        B, n, _ = x.shape
        q = self.query(self.norm(x)).view(B, n, self.num_heads, self.head_dim)  # (B, n, H, hd)
        k = self.key(self.policy_token).view(self.num_heads, self.head_dim)  # (H, hd)
        per_head = torch.einsum("bnhd,hd->bnh", q, k)  # (B, n, H)
        return per_head.sigmoid().mean(dim=-1)

    def decide(self, scores: torch.Tensor, sample: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep decisions (B, n) bool: Bernoulli(I) samples for training, else I >= threshold."""
        if sample:
            # Drawn on the CPU (global RNG or `generator`) so runs replay exactly on any device.
            u = torch.rand(scores.shape, generator=generator)
            return u.to(scores.device) < scores.detach()
        return scores >= self.threshold

    def macs(self, num_tokens: int) -> int:
        """Multiply-accumulates to score `num_tokens` tokens (F_q, F_k on P, the dot products)."""
        return interpreter_macs(num_tokens, self.query.in_features)
