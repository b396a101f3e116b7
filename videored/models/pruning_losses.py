"""The training side of the learned pruners (SPViT, SViT): decisions and losses, small pure functions.

Decisions (both methods score each token with two logits, [keep, prune]):
    gumbel_keep   training: a hard 0/1 sample of the Gumbel-softmax over the two logits with the
                  straight-through gradient (forward value = the one-hot sample, gradient = that
                  of the soft sample), as `F.gumbel_softmax(..., hard=True)[..., 0]` in both
                  papers' code; our own draw so a caller's generator makes it reproducible.
    argmax_keep   test: keep where the keep log-probability beats the prune one.
    budget_keep   evaluation at a budget: the k highest keep probabilities among the eligible
                  tokens, ties broken toward the lowest index (stable), k per sample.

Losses:
    keep_ratio_loss   the keep-ratio loss toward per-stage targets. DynamicViT/SPViT
                      (PeiyanFlying/SPViT `losses_l2.py`: `((score.mean() - ratio[i]) ** 2)`
                      summed over stages, divided by their number) and SViT
                      (uzh-rpg/svit `selective_vit.py` `_ratio_loss`, averaged over gates) define
                      it the same way: the squared gap between the mean hard decision of a stage
                      and its target, averaged over stages. `per_sample=True` is the "fixed rate"
                      variant (each sample's own mean is pushed to the target: SViT's
                      `ratio_per_sample`); the default, batch-mean form is what both papers train
                      with (SViT calls it the dynamic rate: samples may differ).
    logits_kl         distillation of the dense model's logits: KL(teacher || student) with
                      temperature T, mean over the batch (SPViT's `cls_kl_loss`, T = 1).
    token_mse         distillation of the dense model's last-block patch tokens on the tokens the
                      student kept (SPViT's `mse_token=True` for DeiT): mean squared error over the
                      kept (sample, token, channel) entries.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def gumbel_keep(log_probs: torch.Tensor, *, tau: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """log_probs (..., 2) [keep, prune] -> (...) float 0/1 keep samples, straight-through.

    Gumbel noise g = -log(-log u), u ~ U(0, 1); soft = softmax((log_probs + g) / tau); the
    forward value is the one-hot argmax of soft, the gradient that of soft[..., 0]."""
    u = torch.rand(log_probs.shape, generator=generator, dtype=log_probs.dtype,
                   device="cpu" if generator is not None else log_probs.device)
    u = u.to(log_probs.device).clamp_(torch.finfo(log_probs.dtype).tiny, 1.0)
    gumbels = -(-u.log()).log()
    soft = ((log_probs + gumbels) / tau).softmax(dim=-1)[..., 0]  # (...)
    hard = (soft >= 0.5).to(soft.dtype)  # the argmax of two entries (ties: keep, index 0)
    return hard - soft.detach() + soft


def argmax_keep(log_probs: torch.Tensor) -> torch.Tensor:
    """log_probs (..., 2) -> (...) bool: keep where log p(keep) >= log p(prune) (argmax, ties
    to index 0 = keep)."""
    return log_probs[..., 0] >= log_probs[..., 1]


def budget_keep(keep_prob: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """keep_prob (B, n), eligible (B, n) bool, k (B,) long -> (B, n) bool: the k eligible rows
    of highest keep probability per sample (all eligible rows when k >= their count); ties go
    to the lower row index (a stable sort)."""
    order = keep_prob.masked_fill(~eligible, float("-inf")).argsort(
        dim=1, descending=True, stable=True)  # (B, n)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < k.unsqueeze(1)) & eligible


def check_targets(targets: Sequence[float], stages: int, name: str = "targets") -> list[float]:
    """One keep target in [0, 1] per stage, else a ValueError naming the bad entry."""
    targets = [float(t) for t in targets]
    if len(targets) != stages:
        raise ValueError(f"{name}: {len(targets)} keep targets for {stages} pruning stages")
    for i, t in enumerate(targets):
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"{name}[{i}] = {t} is not a keep ratio in [0, 1]")
    return targets


def keep_ratio_loss(decisions: Sequence[torch.Tensor], targets: Sequence[float], *,
                    per_sample: bool = False) -> torch.Tensor:
    """decisions: one (B, N) float keep decision per stage (0/1 with straight-through gradient,
    or probabilities); targets: the stage's keep ratio. -> scalar

        mean over stages s of (mean_{b,i} d_s[b, i] - t_s)²                  (batch mean)
        mean over stages s of mean_b (mean_i d_s[b, i] - t_s)²               (per_sample)
    """
    targets = check_targets(targets, len(decisions))
    terms = []
    for d, t in zip(decisions, targets):
        if per_sample:
            terms.append(((d.mean(dim=1) - t) ** 2).mean())
        else:
            terms.append((d.mean() - t) ** 2)
    return torch.stack(terms).mean()


def logits_kl(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0
              ) -> torch.Tensor:
    """(B, C) logits each -> KL(softmax(teacher/T) || softmax(student/T)) * T², mean over B.
    The teacher is detached (the dense model is not trained by this loss)."""
    T = temperature
    return F.kl_div(F.log_softmax(student / T, dim=-1), F.log_softmax(teacher.detach() / T, dim=-1),
                    reduction="batchmean", log_target=True) * (T * T)


def token_mse(student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """student, teacher (B, N, D) patch tokens at their original positions, keep (B, N) bool
    (the tokens the student kept to the end) -> mean of (student - teacher)² over the kept
    entries; 0 when nothing was kept."""
    if student.shape != teacher.shape or keep.shape != student.shape[:2]:
        raise ValueError(f"token_mse: student {tuple(student.shape)}, teacher "
                         f"{tuple(teacher.shape)} and keep {tuple(keep.shape)} do not line up")
    if not bool(keep.any()):
        return student.new_zeros(())
    return (student[keep] - teacher.detach()[keep]).pow(2).mean()


__all__ = ["argmax_keep", "budget_keep", "check_targets", "gumbel_keep", "keep_ratio_loss",
           "logits_kl", "token_mse"]
