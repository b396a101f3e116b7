"""REINFORCE for the multi-head interpreter: reward (Eq. 2) and policy-gradient loss (Eq. 3).

Pure tensor functions; the stage loop (`videored.engine.stages`) wires them to the model.
"""
from __future__ import annotations

import torch

_EPS = 1e-8  # keeps log() finite if a sigmoid saturates to exactly 0 or 1 in low precision


def reward(correct: torch.Tensor, kept_ratio: torch.Tensor, tau: float, squared: bool = True) -> torch.Tensor:
    """Per-sample reward (Eq. 2): `1 - k^2` if the prediction is correct else `-tau`.

    correct: (B,) bool; kept_ratio: (B,) float, k = |u|_0 / N (the budget vocabulary's kept
    ratio, models/budget.py). `squared=False` gives `1 - k` (the linear reward of supplement
    Table 3). Returns (B,) float.
    """
    k = kept_ratio.float()
    gain = 1.0 - (k * k if squared else k)
    return torch.where(correct.bool(), gain, torch.full_like(gain, -float(tau)))


def self_critical_advantage(
    correct_sampled: torch.Tensor,
    kept_sampled: torch.Tensor,
    correct_greedy: torch.Tensor,
    kept_greedy: torch.Tensor,
    tau: float,
    squared: bool = True,
) -> torch.Tensor:
    """A = R(u) - R(u_hat): sampled decisions against the greedy ones, u_hat_i = [I_i >= threshold].

    All inputs (B,); returns (B,) float, no grad (it scales the log-likelihood, Eq. 3).
    """
    r_sampled = reward(correct_sampled, kept_sampled, tau, squared)
    r_greedy = reward(correct_greedy, kept_greedy, tau, squared)
    return (r_sampled - r_greedy).detach()


def leave_one_out_advantage(rewards: torch.Tensor) -> torch.Tensor:
    """A_i = R_i - mean_{i' != i} R_i' along the last dim (>= 2): no extra forward pass needed.

    Each sample's baseline is independent of its own decisions, so the gradient stays unbiased.
    rewards (B,): the other clips of the batch; (B, K): the other samples of the same clip
    (`reinforce.samples` = K). Returns the same shape, no grad.
    """
    K = rewards.shape[-1]
    if K < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples (batch or per clip)")
    r = rewards.detach().float()
    return r - (r.sum(-1, keepdim=True) - r) / (K - 1)


def log_likelihood(scores: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """sum_i log(I_i u_i + (1 - I_i)(1 - u_i)) per sample.

    scores: (B, N) keep probabilities I in [0, 1]; sampled: (B, N) bool or {0,1}. Tokens dropped by
    an earlier group have I = 0 and u = 0, so they add log(1) = 0. Returns (B,) float32.
    """
    scores = scores.float()
    u = sampled.to(scores.dtype)
    prob = scores * u + (1.0 - scores) * (1.0 - u)  # (B, N) probability of the taken action
    return torch.log(prob.clamp_min(_EPS)).sum(dim=1)


def policy_loss(scores: torch.Tensor, sampled: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Eq. 3 as a loss to minimize: `-mean_b A_b * sum_i log(I_bi u_bi + (1 - I_bi)(1 - u_bi))`.

    scores (B, N) carry the grad; sampled (B, N); advantage (B,) is treated as a constant.
    """
    return -(advantage.detach().float() * log_likelihood(scores, sampled)).mean()
