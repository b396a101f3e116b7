"""Explanations of a dense model's prediction: per-patch relevance (paper Table 1's baselines).

They remove no token (explanation-only rows). Each maps x (B, C, [T,] H, W) to a relevance map
(B, N) over the patch tokens, in the model's token order; `explanation_scores` min-max
normalises it per sample for drawing and for the tables. The rows, and whose definition each
follows (`EXPLANATIONS`; the public benchmark is hila-chefer/Transformer-Explainability,
`baselines/ViT/`, whose ImageNet-Segmentation numbers are Chefer et al., CVPR'21):

- `raw_attention`: the last block's attention of the cls query over the patches, mean over
  heads (benchmark `attn_last_layer`; paper Table 1 "raw attention").
- `rollout`: attention rollout (Abnar & Zuidema 2020), per block Ã = (A + I) / 2 (A the head
  mean; rows of A + I sum to 2), relevance = cls row of Ã_L ··· Ã_s from `start_layer` s = 1
  (benchmark `rollout`, `start_layer=1`).
- `attn_gradcam`: GradCAM on the last block's attention (benchmark `attn_gradcam`; paper
  Table 1 "GradCAM"): per head h the weight w_h = mean over patch keys j of ∂y/∂A_h[0, j],
  map_j = ReLU(mean_h w_h A_h[0, j]).
- `lrp`: full LRP (Binder et al. 2016 rules as the benchmark applies them to ViT, alpha = 1,
  beta = 0): the target's one-hot relevance propagated through head, blocks and the position
  embedding back to the patch tokens, then through the patch-embedding conv by the zᴮ rule to
  the pixels, summed over colour channels (benchmark `full_lrp`; paper Table 1 "LRP"):
  `lrp_pixels` (B, T, H, W), which the benchmark protocol scores as is; `lrp` is its per-patch
  sum (B, N) (the zᴮ rule conserves relevance within each patch) for drawing and top-k.
- `transformer_attribution`: Chefer, Gur & Wolf, CVPR'21: per block Ā = mean_h (∇A ⊙ R_A)⁺ with
  R_A the LRP relevance of the attention probabilities, relevance = cls row of
  (Ā_L + I) ··· (Ā_s + I) from s = 1 (benchmark `transformer_attribution`).
- `feature_gradcam`: GradCAM (Selvaraju et al. 2017) on the last block's norm1 features (B, 1+N,
  D): α_d = mean over patches of ∂y/∂A[:, i, d], map = ReLU(Σ_d α_d A[:, i, d]). videored's own
  variant, formerly `gradcam`.
- `chefer_iccv21`: gradient-weighted attention (Chefer, Gur & Wolf, ICCV'21, rules 5-6): R = I,
  R ← R + mean_h (∇A ⊙ A)⁺ · R block by block, relevance = cls row (formerly `chefer`).

y is the logit of the target class (default: the predicted one). Attention probabilities come
from `block_adapter` (the one module that reads timm's blocks), never from timm's fused kernel.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from videored.models import block_adapter as ba

TOKENS_PER_CHUNK = 4096  # bound the (B, H, L, L) attention maps kept per chunk (memory)
START_LAYER = 1  # the benchmark's start_layer for rollout and transformer attribution
EPS = 1e-9  # LRP stabiliser (the benchmark's safe_divide)

Relevance = Callable[..., torch.Tensor]  # (model, x, target=None) -> (B, N)


# ---------------------------------------------------------------- forward helpers
def _tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N, D): cls and every patch token after the embeddings (no selection)."""
    cls, patches = model.embed(x)
    return torch.cat([cls, patches], dim=1)


@torch.no_grad()
def _into_last_block(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N, D): the sequence entering the last block (every token, no gradient): the
    last-block explanations (raw attention, attention-GradCAM, feature GradCAM) start here."""
    seq = _tokens(model, x)
    for blk in model.blocks[:-1]:
        seq = blk(seq)
    return seq


def _features(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    return model.norm(seq)[:, 0]  # (B, D): what the head reads


def _target_logit(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Sum over the batch of each sample's target logit (default: its predicted class).
    Samples do not interact in eval mode, so one backward gives every sample's gradient."""
    return logits.gather(1, _target(logits, target).view(-1, 1)).sum()


def _target(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return logits.argmax(-1) if target is None else target.to(logits.device)


def _first(start_layer: int, depth: int) -> int:
    """The first block of a rollout: start_layer, or the last block of a shallower model."""
    return min(start_layer, depth - 1)


def cls_row_of_product(mats: list[torch.Tensor]) -> torch.Tensor:
    """Row 0 of M_L ··· M_1 for mats = [M_1, ..., M_L], each (B, L, L), without the L x L
    products: r = e_0ᵀ M_L, then r ← r M_l for l = L-1..1. -> (B, N) patch columns."""
    r = mats[-1][:, 0]  # (B, L)
    for m in reversed(mats[:-1]):
        r = torch.bmm(r.unsqueeze(1), m).squeeze(1)
    return r[:, 1:]


# ---------------------------------------------------------------- attention rows
@torch.no_grad()
def raw_attention(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """The last block's cls-row attention over the patches, mean over heads -> (B, N)."""
    return ba.cls_attention(model.blocks[-1], _into_last_block(model, x))


@torch.no_grad()
def attention_rollout(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
                      start_layer: int = START_LAYER) -> torch.Tensor:
    """Rollout of (A + I) / 2 over blocks start_layer..L -> (B, N) (unnormalised)."""
    seq = _tokens(model, x)
    eye = torch.eye(seq.shape[1], device=seq.device, dtype=seq.dtype)
    mats = []
    for blk in model.blocks:
        attend = ba.ExplicitAttend(blk.attn)
        seq = ba.block_forward(blk, seq, attend)
        mats.append(0.5 * attend.probs.mean(dim=1) + 0.5 * eye)  # (B, L, L)
    return cls_row_of_product(mats[_first(start_layer, len(mats)):])


def attn_gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Attention-GradCAM on the last block -> (B, N) = ReLU(mean_h w_h A_h[0, 1:])."""
    seq = _into_last_block(model, x)
    last = model.blocks[-1]
    with torch.enable_grad():
        seq = seq.detach().requires_grad_(True)  # the graph reaches A even with frozen weights
        attend = ba.ExplicitAttend(last.attn)
        out = ba.block_forward(last, seq, attend)
        logits = model.forward_head(_features(model, out))
        (grad,) = torch.autograd.grad(_target_logit(logits, target), attend.probs)
    cam = attend.probs.detach()[:, :, 0, 1:]  # (B, H, N): cls query, patch keys
    weights = grad[:, :, 0, 1:].mean(dim=-1, keepdim=True)  # (B, H, 1)
    return (cam * weights).mean(dim=1).clamp(min=0)


def gradcam_parts(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature-GradCAM's activations A (B, 1 + N, D) (the last block's norm1 output) and channel
    weights α (B, D) = mean over patch tokens of ∂y_target/∂A."""
    seq = _into_last_block(model, x)
    last = model.blocks[-1]
    with torch.enable_grad():
        acts = last.norm1(seq).detach().requires_grad_(True)
        out = ba.block_forward(last, seq, ba.ExplicitAttend(last.attn), normed=acts)
        logits = model.forward_head(_features(model, out))
        (grad,) = torch.autograd.grad(_target_logit(logits, target), acts)
    return acts.detach(), grad[:, 1:].mean(dim=1)


def feature_gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """GradCAM on the last block's norm1 patch features -> (B, N) = ReLU(Σ_d α_d A[:, 1:, d])."""
    acts, weights = gradcam_parts(model, x, target)
    return torch.relu((acts[:, 1:] * weights.unsqueeze(1)).sum(-1))


def _probs_and_grads(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every block's attention probabilities (B, H, L, L) and the target logit's gradient."""
    with torch.enable_grad():
        seq = _tokens(model, x).detach().requires_grad_(True)  # grads flow even if frozen
        probs = []
        for blk in model.blocks:
            attend = ba.ExplicitAttend(blk.attn)
            seq = ba.block_forward(blk, seq, attend)
            probs.append(attend.probs)
        logits = model.forward_head(_features(model, seq))
        grads = torch.autograd.grad(_target_logit(logits, target), probs)
    return [p.detach() for p in probs], list(grads)


def chefer_iccv21(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Gradient-weighted attention relevance (Chefer et al., ICCV'21) -> (B, N)."""
    probs, grads = _probs_and_grads(model, x, target)
    eye = torch.eye(probs[0].shape[-1], device=probs[0].device, dtype=probs[0].dtype)
    mats = [eye + (g * p).clamp(min=0).mean(dim=1) for g, p in zip(grads, probs)]  # I + Ā
    return cls_row_of_product(mats)  # R = (I + Ā_L) ··· (I + Ā_1)


# ---------------------------------------------------------------- LRP rules
def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / (b ± EPS), and 0 where b == 0 (relevance of a zero output goes nowhere)."""
    den = b + EPS * torch.where(b >= 0, 1.0, -1.0)
    return torch.where(b == 0, torch.zeros_like(a), a / den)


def lrp_linear(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """The alpha = 1, beta = 0 rule of a linear map y = x Wᵀ (+ bias, which takes none):
    R_i = Σ_j (x_i⁺ W_ji⁺ + x_i⁻ W_ji⁻) / z_j · R_j, z_j = Σ_i x_i⁺ W_ji⁺ + x_i⁻ W_ji⁻.
    Conserves Σ R where z ≠ 0. x (..., I), weight (J, I), relevance (..., J) -> (..., I)."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    s = safe_divide(relevance, F.linear(xp, wp) + F.linear(xn, wn))  # (..., J)
    return xp * (s @ wp) + xn * (s @ wn)


def lrp_matmul(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The z-rule of z = a @ b applied to both factors, each then halved (the benchmark's rule
    for q kᵀ and A v): each product term a_ik b_kj gives its share to both factors, so
    Σ R_a + Σ R_b = Σ R. a (..., I, K), b (..., K, J), relevance (..., I, J)."""
    s = safe_divide(relevance, a @ b)
    return a * (s @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ s) / 2


def lrp_add(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual-sum rule of z = a + b: the z-rule, then each branch rescaled so that its total
    is |Σ R_a| / (|Σ R_a| + |Σ R_b|) of Σ R (per sample): exact conservation.
    a, b, relevance (B, ...)."""
    s = safe_divide(relevance, a + b)
    ra, rb = a * s, b * s
    dims = tuple(range(1, relevance.ndim))
    sa, sb = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True)
    total = relevance.sum(dims, keepdim=True)
    share_a = safe_divide(sa.abs(), sa.abs() + sb.abs()) * total
    share_b = safe_divide(sb.abs(), sa.abs() + sb.abs()) * total
    return ra * safe_divide(share_a, sa), rb * safe_divide(share_b, sb)


def lrp_block(trace: ba.BlockTrace, block: nn.Module, relevance: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance at a block's output (B, L, D) -> (at its input (B, L, D), of its attention
    probabilities R_A (B, H, L, L)). Norms, GELU, softmax, layer scale and the q/k norms pass
    relevance through unchanged (the benchmark's rule for them); a copy (residual fork) sums."""
    qkv, proj, fc1, fc2 = ba.lrp_linears(block)
    t = trace
    r_mid, r_mlp = lrp_add(t.mid, t.mlp_out, relevance)
    r_mid = r_mid + lrp_linear(t.h2, fc1.weight, lrp_linear(t.hidden, fc2.weight, r_mlp))
    r_x, r_attn = lrp_add(t.x, t.attn_out, r_mid)
    q, k, v = (ba.heads_first(u) for u in (t.q, t.k, t.v))  # (B, H, L, hd)
    heads, head_dim = q.shape[1], q.shape[3]
    r_o = lrp_linear(t.proj_in, proj.weight, r_attn).unflatten(-1, (heads, head_dim))
    r_o = ba.heads_first(r_o)  # (B, H, L, hd)
    r_probs, r_v = lrp_matmul(t.probs, v, r_o)  # (B, H, L, L), (B, H, L, hd)
    r_q, r_kt = lrp_matmul(q, k.transpose(-2, -1), r_probs)  # through softmax unchanged
    r_qkv = torch.stack([ba.tokens_first(r_q), ba.tokens_first(r_kt.transpose(-2, -1)),
                         ba.tokens_first(r_v)], dim=-3)  # (B, L, 3, H, hd): timm's qkv order
    return r_x + lrp_linear(t.h, qkv.weight, r_qkv.flatten(-3)), r_probs


def _position_part(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    """The position (+ time) embedding added to each token of seq (B, 1 + N, D)."""
    emb = model.embed
    T = emb.grid[0]
    pos = emb.pos_embed[:, 1:].repeat(1, T, 1)  # (1, N, D): spatial, shared by the frames
    if emb.time_embed is not None:
        pos = pos + emb.time_embed.repeat_interleave(pos.shape[1] // T, dim=1)
    return torch.cat([emb.pos_embed[:, :1], pos], dim=1).expand_as(seq)


def lrp_pass(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
             attention_grads: bool = False) -> dict[str, object]:
    """One LRP pass: {"tokens": relevance at the embedded tokens (B, 1 + N, D) before the
    position embedding, "attention": [R_A per block (B, H, L, L)], "grads": [∂y/∂A per block] if
    attention_grads, "layers": [Σ R at the head input, after each block from the last down]}.
    The target's relevance starts as its one-hot logit vector (value 1), as in the benchmark."""
    with torch.enable_grad():
        seq = _tokens(model, x).detach().requires_grad_(attention_grads)
        traces, h = [], seq
        for blk in model.blocks:
            traces.append(ba.traced_block_forward(blk, h, retain_grad=attention_grads))
            h = traces[-1].out
        feats = _features(model, h)
        logits = model.forward_head(feats)
        grads = (list(torch.autograd.grad(_target_logit(logits, target),
                                          [t.probs for t in traces]))
                 if attention_grads else None)
    with torch.no_grad():
        r_logits = F.one_hot(_target(logits, target), logits.shape[-1]).to(feats.dtype)
        r = torch.zeros_like(h)
        r[:, 0] = lrp_linear(feats, model.head.weight, r_logits)  # norm: passes through
        layers, attention = [float(r.sum())], []
        for blk, t in zip(reversed(model.blocks), reversed(traces)):
            r, r_probs = lrp_block(t, blk, r)
            attention.insert(0, r_probs)
            layers.append(float(r.sum()))
        position = _position_part(model, seq)
        r_tokens, _ = lrp_add(seq.detach() - position, position, r)
    return {"tokens": r_tokens, "attention": attention, "grads": grads, "layers": layers}


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Full LRP relevance of each patch token, summed over channels -> (B, N) (= the per-patch
    sum of `lrp_pixels`: its rule conserves relevance within each patch)."""
    return lrp_pass(model, x, target)["tokens"][:, 1:].sum(-1)


def lrp_input_rule(patches: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                   low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The zᴮ rule of an input layer y = x Wᵀ with inputs bounded in [low, high] (Montavon et
    al. 2017; the benchmark's rule for the patch-embedding conv):
    R_i = Σ_j (x_i W_ji - low W_ji⁺ - high W_ji⁻) / z_j · R_j, z_j the sum of the numerators.
    patches (..., I), weight (J, I), relevance (..., J), low / high broadcastable (..., 1)."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    z = patches @ weight.T - low * wp.sum(1) - high * wn.sum(1)  # >= 0: x in [low, high]
    s = relevance / (z + EPS)
    return patches * (s @ weight) - low * (s @ wp) - high * (s @ wn)


def lrp_pixels(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Full LRP to the pixels, as the benchmark's `full_lrp`: the patch tokens' relevance through
    the patch-embedding conv by the zᴮ rule (bounds: each frame's min / max input value),
    summed over colour channels -> (B, T, H, W) (T = 1 for images)."""
    from einops import rearrange

    r = lrp_pass(model, x, target)["tokens"][:, 1:]  # (B, N, D)
    frames = x if x.ndim == 5 else x.unsqueeze(2)  # (B, C, T, H, W)
    weight, p = ba.patch_embed_matrix(model.embed.patch_embed)
    _, gh, gw = model.grid
    with torch.no_grad():
        patches = rearrange(frames, "b c t (h p) (w q) -> b (t h w) (c p q)", p=p, q=p)
        low = frames.amin(dim=(1, 3, 4)).repeat_interleave(gh * gw, dim=1)[..., None]  # (B, N, 1)
        high = frames.amax(dim=(1, 3, 4)).repeat_interleave(gh * gw, dim=1)[..., None]
        rp = lrp_input_rule(patches, weight.to(patches.dtype), r, low, high)  # (B, N, C*p*p)
        return rearrange(rp, "b (t h w) (c p q) -> b c t (h p) (w q)", h=gh, w=gw, p=p,
                         q=p).sum(1)


def transformer_attribution(model: nn.Module, x: torch.Tensor,
                            target: torch.Tensor | None = None, *,
                            start_layer: int = START_LAYER) -> torch.Tensor:
    """Chefer et al. CVPR'21: cls row of Π (mean_h (∇A ⊙ R_A)⁺ + I) from start_layer -> (B, N)."""
    out = lrp_pass(model, x, target, attention_grads=True)
    cams = [(g * r).clamp(min=0).mean(dim=1) for g, r in zip(out["grads"], out["attention"])]
    eye = torch.eye(cams[0].shape[-1], device=cams[0].device, dtype=cams[0].dtype)
    return cls_row_of_product([c + eye for c in cams[_first(start_layer, len(cams)):]])


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Explanation:
    """One explanation row: how it is computed and which published row it stands for."""
    name: str
    compute: Relevance
    paper_row: str  # the row of paper Table 1 / the benchmark it corresponds to
    follows: str  # whose definition it implements
    # a pixel-level map (B, T, H, W) the benchmark scores instead of the upsampled patch map
    pixels: Relevance | None = None


_ROWS = (
    Explanation("raw_attention", raw_attention, "Table 1 'raw attention'",
                "benchmark attn_last_layer (last block, cls row, head mean)"),
    Explanation("rollout", attention_rollout, "benchmark 'rollout'",
                "Abnar & Zuidema 2020, benchmark start_layer=1"),
    Explanation("attn_gradcam", attn_gradcam, "Table 1 'GradCAM'",
                "benchmark attn_gradcam (GradCAM on the last block's attention)"),
    Explanation("lrp", lrp, "Table 1 'LRP'", "benchmark full_lrp (Binder et al. rules)",
                pixels=lrp_pixels),
    Explanation("transformer_attribution", transformer_attribution,
                "benchmark 'transformer_attribution' (Chefer et al. CVPR'21, 'Ours')",
                "Chefer, Gur & Wolf CVPR'21, start_layer=1"),
    Explanation("feature_gradcam", feature_gradcam, "none (videored's variant)",
                "Selvaraju et al. 2017 on the last block's norm1 features"),
    Explanation("chefer_iccv21", chefer_iccv21, "none (later rule)",
                "Chefer, Gur & Wolf ICCV'21 rules 5-6 (gradient x attention)"),
)
EXPLANATIONS: dict[str, Explanation] = {e.name: e for e in _ROWS}
# old names, accepted with a one-time warning
DEPRECATED = {"gradcam": "feature_gradcam", "chefer": "chefer_iccv21"}
_warned: set[str] = set()


def canonical_name(name: str) -> str:
    """The current name of an explanation (old names warn once); ValueError if unknown."""
    if name in DEPRECATED:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"explanation {name!r} is now called {DEPRECATED[name]!r}",
                          DeprecationWarning, stacklevel=3)
        return DEPRECATED[name]
    if name not in EXPLANATIONS:
        raise ValueError(f"unknown explanation {name!r}; choose from {', '.join(EXPLANATIONS)}")
    return name


def is_explanation(name: str) -> bool:
    return name in EXPLANATIONS or name in DEPRECATED


def minmax(scores: torch.Tensor) -> torch.Tensor:
    """(B, N) -> per-sample (s - min) / (max - min) in [0, 1]; a constant map becomes 0."""
    lo = scores.amin(dim=1, keepdim=True)
    span = scores.amax(dim=1, keepdim=True) - lo
    return torch.where(span > 0, (scores - lo) / span.clamp_min(torch.finfo(scores.dtype).tiny),
                       torch.zeros_like(scores))


def explanation_scores(model: nn.Module, x: torch.Tensor, method: str,
                       target: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) relevance of `method` on the dense model, min-max normalised per sample to [0, 1].

    Samples are explained in chunks of at most TOKENS_PER_CHUNK tokens (attention maps of all
    blocks are kept for the backward pass: 12 x (H, 1569, 1569) floats per JointST clip)."""
    compute = EXPLANATIONS[canonical_name(method)].compute
    was_training = model.training
    model.eval()
    chunk = max(1, TOKENS_PER_CHUNK // (model.num_patches + 1))
    try:
        scores = torch.cat([compute(model, x[i:i + chunk],
                                    None if target is None else target[i:i + chunk])
                            for i in range(0, len(x), chunk)])
    finally:
        model.train(was_training)
    return minmax(scores.detach())


def explanation_pixels(model: nn.Module, x: torch.Tensor, method: str,
                       target: torch.Tensor | None = None) -> torch.Tensor | None:
    """(B, T, H, W) pixel-level relevance of `method` if it has one (`lrp`), else None."""
    pixels = EXPLANATIONS[canonical_name(method)].pixels
    if pixels is None:
        return None
    was_training = model.training
    model.eval()
    chunk = max(1, TOKENS_PER_CHUNK // (model.num_patches + 1))
    try:
        return torch.cat([pixels(model, x[i:i + chunk],
                                 None if target is None else target[i:i + chunk])
                          for i in range(0, len(x), chunk)]).detach()
    finally:
        model.train(was_training)


def stable_topk_mask(scores: torch.Tensor, k: torch.Tensor | list[int]) -> torch.Tensor:
    """(B, N) scores, k (B,) -> (B, N) bool: the k[b] highest of row b, ties broken by the
    lowest index (a stable sort), so every device and batch order keeps the same set."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank < torch.as_tensor(k, device=scores.device).view(-1, 1)


def explanation_output(model: nn.Module, x: torch.Tensor, method: str,
                       kept_ratio: torch.Tensor | float):
    """A `ReductionOutput` for drawing and scoring an explanation like a token scorer.

    kept_ratio: per sample (B,) or one number; the top round(ratio·N) patches (at least 1) are
    "kept" (`stable_topk_mask`). Every group gets the same scores and mask: the explanation is
    one selection. logits and gflops are the dense model's forward (the backward not counted).
    """
    from videored.models.vit import ReductionOutput

    scores = explanation_scores(model, x, method)
    ratios = torch.as_tensor(kept_ratio, dtype=torch.float64).expand(len(x))
    k = [max(1, round(float(r) * scores.shape[1])) for r in ratios]
    keep = stable_topk_mask(scores, k)
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
    from videored.models.methods import run_methods

    explained = [m for m in methods if is_explanation(m)]
    scorers = [m for m in methods if not is_explanation(m)]
    reference = reference_model or model
    need_ref = bool(explained) and kept_ratio is None
    if need_ref and getattr(reference, "interpreters", None) is None:
        raise ValueError(f"{explained} need a kept ratio: this model has no interpreter whose "
                         "kept ratio they could keep (give a fixed kept ratio)")
    run = scorers + (["interpreter"] if need_ref and "interpreter" not in scorers else [])
    outputs = run_methods(model, x, run, match=match, kept_ratio=kept_ratio,
                          reference_model=reference) if run else {}
    for m in explained:
        ratio = kept_ratio if kept_ratio is not None else outputs["interpreter"].kept_ratio
        outputs[m] = explanation_output(model, x, m, ratio)
    return {m: outputs[m] for m in methods}


__all__ = ["DEPRECATED", "EXPLANATIONS", "Explanation", "START_LAYER", "attention_rollout",
           "attn_gradcam", "canonical_name", "chefer_iccv21", "cls_row_of_product",
           "explanation_output", "explanation_pixels", "explanation_scores", "lrp_input_rule",
           "lrp_pixels", "feature_gradcam", "gradcam_parts",
           "is_explanation", "lrp", "lrp_add", "lrp_block", "lrp_linear", "lrp_matmul",
           "lrp_pass", "minmax", "raw_attention", "run_with_explanations", "safe_divide",
           "stable_topk_mask", "transformer_attribution"]
