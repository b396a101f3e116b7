"""Explanation baselines of paper Table 1: per-patch relevance of a **dense** model.

These explain the model's prediction; they remove no token (explanation-only rows in the
tables). Each maps inputs x (B, C, [T,] H, W) to patch scores (B, N) in [0, 1] (divided by the
sample's max, like the token scorers), in the model's token order, so they are drawn and scored
exactly like the token scorers (`explanation_output`: the top fraction of patches is "kept").

- attention rollout (Abnar & Zuidema 2020): per block the head-mean attention with the residual
  identity, Ã = 0.5·A + 0.5·I (rows still sum to 1); relevance = cls row of Ã_L ··· Ã_1.
- GradCAM (Selvaraju et al. 2017) on the last block's tokens: activations A = the tokens the
  last block's attention reads (its norm1 output, (B, 1+N, D)), weights α_d = mean over the
  patch tokens of ∂y_c/∂A[:, i, d] (y_c the logit of the predicted class), map = ReLU(Σ_d α_d
  A[:, i, d]). The last block's *output* patch tokens cannot be used: the head reads only cls.
- gradient-weighted attention relevance (Chefer, Gur & Wolf 2021, "Generic attention-model
  explainability", rules 5-6): Ā = mean over heads of (∇A ⊙ A)⁺ per block, R = I, R ← R + Ā·R
  block by block; relevance = cls row of R. (Their CVPR 2021 method replaces A by its LRP
  relevance; this is the LRP-free rule their later code uses for ViT.)

Attention probabilities come from each block's own qkv weights (`block_forward`), not from
timm's fused SDPA kernel, which never forms them; nothing in timm is patched.
"""
from __future__ import annotations

import torch
from torch import nn

from videored.models.methods import EXPLANATIONS, run_methods

TOKENS_PER_CHUNK = 4096  # bound the (B, H, L, L) attention maps kept per chunk (memory)


def block_forward(block: nn.Module, x: torch.Tensor,
                  normed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """timm `Block.forward` written out, also returning the attention probabilities.

    x (B, L, D) -> (output (B, L, D), probs (B, H, L, L)). `normed` replaces `block.norm1(x)`
    (GradCAM differentiates with respect to it). Attention dropout is left out (eval mode).
    """
    attn = block.attn
    h = block.norm1(x) if normed is None else normed
    B, L, _ = h.shape
    H, hd = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(h).reshape(B, L, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)  # (B, H, L, hd)
    probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, L, L)
    y = (probs @ v).transpose(1, 2).reshape(B, L, H * hd)
    y = getattr(attn, "norm", nn.Identity())(y)
    if getattr(attn, "gate", None) is not None:
        y = y * attn.gate(h).sigmoid()
    y = attn.proj_drop(attn.proj(y))
    x = x + block.drop_path1(block.ls1(y))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x)))), probs


def _tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N, D): cls and every patch token after the embeddings (no selection)."""
    cls, patches = model.embed(x)
    return torch.cat([cls, patches], dim=1)


def _head(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.norm(seq)[:, 0])  # (B, num_classes)


def _target_logit(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Sum over the batch of each sample's target logit (default: its predicted class).
    Samples do not interact in eval mode, so one backward gives every sample's gradient."""
    target = logits.argmax(-1) if target is None else target.to(logits.device)
    return logits.gather(1, target.view(-1, 1)).sum()


def cls_row_of_product(mats: list[torch.Tensor]) -> torch.Tensor:
    """Row 0 of M_L ··· M_1 for mats = [M_1, ..., M_L], each (B, L, L), without the L x L
    products: r = e_0ᵀ M_L, then r ← r M_l for l = L-1..1. -> (B, N) patch columns."""
    r = mats[-1][:, 0]  # (B, L)
    for m in reversed(mats[:-1]):
        r = torch.bmm(r.unsqueeze(1), m).squeeze(1)
    return r[:, 1:]


def attention_rollout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention rollout with the residual identity -> (B, N) relevance (unnormalized)."""
    with torch.no_grad():
        seq = _tokens(model, x)
        eye = torch.eye(seq.shape[1], device=seq.device, dtype=seq.dtype)
        mats = []
        for blk in model.blocks:
            seq, probs = block_forward(blk, seq)
            mats.append(0.5 * probs.mean(dim=1) + 0.5 * eye)  # (B, L, L)
        return cls_row_of_product(mats)


def gradcam_parts(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """GradCAM's activations A (B, 1 + N, D) (the last block's norm1 output) and channel
    weights α (B, D) = mean over patch tokens of ∂y_target/∂A."""
    with torch.no_grad():
        seq = _tokens(model, x)
        for blk in model.blocks[:-1]:
            seq = blk(seq)
    last = model.blocks[-1]
    with torch.enable_grad():
        acts = last.norm1(seq).detach().requires_grad_(True)
        out, _ = block_forward(last, seq, normed=acts)
        (grad,) = torch.autograd.grad(_target_logit(_head(model, out), target), acts)
    return acts.detach(), grad[:, 1:].mean(dim=1)


def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """GradCAM on the last block's patch tokens -> (B, N) = ReLU(Σ_d α_d A[:, 1:, d])."""
    acts, weights = gradcam_parts(model, x, target)
    return torch.relu((acts[:, 1:] * weights.unsqueeze(1)).sum(-1))


def chefer_relevance(model: nn.Module, x: torch.Tensor,
                     target: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient-weighted attention relevance (Chefer et al. 2021) -> (B, N)."""
    with torch.enable_grad():
        seq = _tokens(model, x).detach().requires_grad_(True)  # grads flow even if frozen
        all_probs = []
        for blk in model.blocks:
            seq, probs = block_forward(blk, seq)
            all_probs.append(probs)
        grads = torch.autograd.grad(_target_logit(_head(model, seq), target), all_probs)
    eye = torch.eye(seq.shape[1], device=seq.device, dtype=seq.dtype)
    mats = [eye + (g * p).clamp(min=0).mean(dim=1)  # I + Ā, (B, L, L)
            for g, p in zip(grads, (p.detach() for p in all_probs))]
    return cls_row_of_product(mats)  # R = (I + Ā_L) ··· (I + Ā_1)


_METHODS = {"rollout": lambda m, x: attention_rollout(m, x), "gradcam": gradcam,
            "chefer": chefer_relevance}


def explanation_scores(model: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    """(B, N) scores in [0, 1] (divided by each sample's max) of `method` on the dense model.

    Samples are explained in chunks of at most TOKENS_PER_CHUNK tokens (attention maps of all
    blocks are kept for the backward pass: 12 x (H, 1569, 1569) floats per JointST clip)."""
    from videored.models.selectors import _per_sample_unit_max

    if method not in _METHODS:
        raise ValueError(f"unknown explanation {method!r}; choose from {', '.join(EXPLANATIONS)}")
    was_training = model.training
    model.eval()
    chunk = max(1, TOKENS_PER_CHUNK // (model.num_patches + 1))
    try:
        scores = torch.cat([_METHODS[method](model, x[i:i + chunk])
                            for i in range(0, len(x), chunk)])
    finally:
        model.train(was_training)
    return _per_sample_unit_max(scores.detach(), torch.ones_like(scores, dtype=torch.bool))


def explanation_output(model: nn.Module, x: torch.Tensor, method: str,
                       keep_fraction: torch.Tensor | float):
    """A `ReductionOutput` for drawing and scoring an explanation like a token scorer.

    keep_fraction: per sample (B,) or one number; the top round(fraction·N) patches (at least
    1) are "kept". Every group gets the same scores and mask: the explanation is one selection.
    logits and gflops are the dense model's forward (the explanation's backward not counted).
    """
    from videored.models.selectors import topk_keep
    from videored.models.tokens import full_token_set
    from videored.models.vit import ReductionOutput

    scores = explanation_scores(model, x, method)
    fractions = torch.as_tensor(keep_fraction, dtype=torch.float64).expand(len(x)).tolist()
    keep = torch.cat([topk_keep(scores[i:i + 1], full_token_set(scores[i:i + 1, :, None]), f)
                      for i, f in enumerate(fractions)])
    with torch.no_grad():
        dense = model(x, selector="none")  # the prediction explained and its cost
    return ReductionOutput(logits=dense.logits, scores=[scores] * model.groups,
                           keep=[keep] * model.groups, gflops=dense.gflops)


@torch.no_grad()
def run_with_explanations(model: nn.Module, x: torch.Tensor, methods: list[str], *,
                          match: str = "ratio", kept_ratio: float | None = None,
                          reference_model: nn.Module | None = None) -> dict:
    """{name: ReductionOutput} of token-reduction methods and explanations on one batch x.

    Method-table names run through `methods.run_methods` (its budget: the fixed `kept_ratio`, else
    matched to the interpreter of `reference_model` / `model` by `match`). Explanations explain the
    dense `model` and keep, clip by clip, that same kept ratio: the fixed `kept_ratio`, else the
    interpreter's own `kept_ratio` on that clip (whatever `match`: they have no cost to match).
    """
    explained = [m for m in methods if m in EXPLANATIONS]
    scorers = [m for m in methods if m not in EXPLANATIONS]
    reference = reference_model or model
    need_ref = bool(explained) and kept_ratio is None
    if need_ref and getattr(reference, "interpreters", None) is None:
        raise ValueError(f"{explained} need a kept ratio: this model has no interpreter whose "
                         "kept ratio they could keep (give a fixed kept ratio)")
    run = scorers + (["interpreter"] if need_ref and "interpreter" not in scorers else [])
    outputs = run_methods(model, x, run, match=match, kept_ratio=kept_ratio,
                          reference_model=reference) if run else {}
    for m in explained:
        fraction = kept_ratio if kept_ratio is not None else outputs["interpreter"].kept_ratio
        outputs[m] = explanation_output(model, x, m, fraction)
    return {m: outputs[m] for m in methods}


__all__ = ["EXPLANATIONS", "attention_rollout", "block_forward", "chefer_relevance",
           "cls_row_of_product", "explanation_output", "explanation_scores", "gradcam",
           "gradcam_parts", "run_with_explanations"]
