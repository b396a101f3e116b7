"""RLT (Choudhury et al., NeurIPS 2024, "Don't Look Twice: Faster Video Transformers with
Run-Length Tokenization") as small pure tensor functions: difference -> keep -> run lengths.

What RLT does (read from the paper and its public code, rccchoudhury/rlt,
`src/models/static_token_utils.py`, `tokenizer.py`, `vit_helpers.py`):
  * Before the model runs, on the *normalized* pixels (0-1, then ImageNet mean/std), each token
    is compared with the token at the same spatial position one step earlier in time. The
    difference is the mean absolute difference over the token's pixels and channels (|a - b|,
    average-pooled over the p x p patch, then averaged over C).
  * Their tokens are VideoMAE tubelets of 2 frames; a tubelet is compared by its *last* frame
    against the *first* frame of the previous tubelet. With one frame per token (tubelet 1, our
    JointST) that rule is exactly "frame t against frame t-1", which is what we compute.
  * The first time step has no predecessor: it gets a dummy difference of 255, i.e. it is
    always kept. Here it is +inf, for the same reason (any finite threshold keeps it).
  * A token is kept when its difference is strictly above the threshold tau (`diff > tau`),
    dropped otherwise. The code's default and its evaluation config use tau = 0.1. The paper
    words it "below tau: static"; the two only part at equality, which matters for tau = 0:
    with the strict rule, exact repeats (difference 0) are dropped and nothing else is.
  * Each token is compared with its immediate predecessor, not with the run's first (kept)
    token, so a slow drift below tau per step can drop many steps in a row.
  * Run length of a kept token = the number of time steps it stands for: itself plus the dropped
    steps after it at its position, up to the next kept token there or the clip's end.
  * Length embedding (fine-tuning only, `use_length_embed`): a learned table of shape
    (T_tokens, D), looked up at length - 1 and added to the kept tokens after the position
    embedding. Their table is initialised with trunc_normal(std=0.02); their eval config turns it
    off. Kept clips are packed into one sequence with a block-diagonal attention mask (xformers).

Where videored differs:
  * One frame per token (JointST, per-frame 16x16 patches): the comparison is frame t vs t-1.
  * The difference is computed on whatever normalization the model's input uses (TimeSformer:
    mean 0.45 / std 0.225; mmaction2 JointST: 127.5 / 127.5). tau = 0.1 on ImageNet-normalized
    pixels is ~5.8 of 255 grey levels per pixel on average; a model normalized with std s (in
    0-1 units) needs tau * 0.226 / s for the same grey-level rule (0.1 -> 0.045 for 127.5/255).
  * Budget mapping (`threshold_for_kept_ratio`, `keep_at_kept_ratio`): RLT itself is
    threshold-native (the kept count follows the content). To compare methods at matched cost,
    a per-clip threshold is chosen so that each clip keeps round(kept_ratio * N) tokens (never
    fewer than frame 0), ties broken lowest token index first (a stable top-k).
  * Run lengths are returned at each token's own position (B, N) in token order. (Their code
    returns the lengths in position-major order, (h, w, t), beside tokens kept in frame-major
    order (t, h, w); we align them with the tokens.)
  * `LengthEmbedding` is zero-initialised so that adding it to a training-free model changes
    nothing; fine-tuning then learns it.
  * Padding + key mask (the project's batching, `tokens.gather_kept`) instead of packing.

Cost: the differences, the threshold and the run lengths are elementwise work, subtraction,
absolute value, mean, comparison, sort (no matrix product), so by the project's convention
(`flops.py`: only matrix products count) RLT's scoring costs 0 MACs; its saving is the blocks'
cost at the kept count.

Token order (embedding.py): patch n of a (T, gh, gw) grid is frame n // (gh*gw),
row (n % (gh*gw)) // gw, col n % gw.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .selectors import num_to_keep

RLT_THRESHOLD = 0.1  # RLT's tau (their code's default and its evaluation config)


def pixel_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Video (B, C, T, H, W) -> its pixel patches (B, N, C*p*p) in token order (frame-major).

    Computed in float32 at least (RLT casts to float32 too), so half-precision inputs do not
    round the small differences the threshold looks at."""
    if x.ndim != 5:
        raise ValueError(f"RLT needs a video (B, C, T, H, W), got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(f"RLT: frame size {H}x{W} is not a multiple of patch_size {patch_size}")
    if x.dtype != torch.float64:
        x = x.to(torch.float32)
    return rearrange(x, "b c t (gh p) (gw q) -> b (t gh gw) (c p q)", p=patch_size, q=patch_size)


def differences_from_patches(patches: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Mean absolute difference of each patch to the same patch one frame earlier. -> (B, N).

    patches (B, N, P) in token order, grid (T, gh, gw) with N = T*gh*gw. Frame 0 has no
    predecessor and gets +inf: kept under any threshold (RLT's dummy first frame)."""
    T, gh, gw = grid
    B, N, P = patches.shape
    if N != T * gh * gw:
        raise ValueError(f"RLT: {N} patches do not fill the grid (T, gh, gw) = {grid}")
    frames = patches.reshape(B, T, gh * gw, P)  # reshape: gathered patches may be strided
    diff = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=-1)  # (B, T-1, S)
    first = diff.new_full((B, 1, gh * gw), float("inf"))  # (B, 1, S): frame 0
    return torch.cat([first, diff], dim=1).view(B, N)


def patch_differences(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Video (B, C, T, H, W), normalized pixels -> (B, N) RLT difference per patch token."""
    patches = pixel_patches(x, patch_size)  # (B, N, C*p*p); checks the layout
    T, H, W = x.shape[2:]
    return differences_from_patches(patches, (T, H // patch_size, W // patch_size))


def rlt_scores(diff: torch.Tensor) -> torch.Tensor:
    """Differences as the project's display scores in [0, 1]: divided by the clip's largest
    finite difference; frame 0 (+inf, always kept) -> 1. (B, N) -> (B, N).

    The same per-clip order as `diff`, so a top-k of these is a top-k of the differences; heatmaps
    of every method share one colour scale (selectors.py)."""
    finite = diff.masked_fill(torch.isinf(diff), 0.0)
    top = finite.amax(dim=1, keepdim=True).clamp_min(1e-12)  # (B, 1)
    return torch.where(torch.isinf(diff), torch.ones_like(diff), (finite / top).clamp(max=1.0))


def rlt_keep(diff: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """RLT's rule: keep a token when its difference is strictly above the threshold. -> (B, N).

    threshold: one float, or one per clip (B,). Frame 0 (+inf) is always kept."""
    tau = torch.as_tensor(threshold, dtype=diff.dtype, device=diff.device)
    if tau.ndim == 1:
        tau = tau.unsqueeze(1)  # (B, 1)
    return diff > tau


def kept_count(diff: torch.Tensor, kept_ratio: float | torch.Tensor,
               frame_patches: int) -> torch.Tensor:
    """Tokens a clip keeps at `kept_ratio`: round(kept_ratio * N), never fewer than frame 0's
    `frame_patches` = gh*gw tokens (RLT always keeps frame 0). -> (B,) long.

    The rounding is the project's one rule (`selectors.num_to_keep`)."""
    B, N = diff.shape
    counts = torch.full((B,), N, dtype=torch.long, device=diff.device)
    return num_to_keep(counts, kept_ratio).clamp(min=min(frame_patches, N))


def _stable_order(diff: torch.Tensor) -> torch.Tensor:
    """Token indices by decreasing difference, ties lowest index first. (B, N) long."""
    return torch.sort(diff, dim=1, descending=True, stable=True).indices


def keep_at_kept_ratio(diff: torch.Tensor, kept_ratio: float | torch.Tensor,
                       frame_patches: int) -> torch.Tensor:
    """Matched-budget RLT: each clip keeps its `kept_count` largest differences. -> (B, N) bool.

    A stable top-k: among equal differences the lowest token index is kept first, so the mask
    of a clip depends on that clip only. Equals `rlt_keep(diff, threshold_for_kept_ratio(...))`
    plus, where several tokens tie at that threshold, the first of them that fill the count."""
    k = kept_count(diff, kept_ratio, frame_patches)  # (B,)
    order = _stable_order(diff)
    ranks = torch.arange(diff.shape[1], device=diff.device).expand_as(order)
    in_top = ranks < k.unsqueeze(1)  # (B, N), by rank
    return torch.zeros_like(in_top).scatter(1, order, in_top)  # back to token order


def threshold_for_kept_ratio(diff: torch.Tensor, kept_ratio: float | torch.Tensor,
                             frame_patches: int) -> torch.Tensor:
    """Per-clip threshold tau_b that RLT's rule would need to keep `kept_count` tokens. -> (B,).

    tau_b is the largest difference the stable top-k drops, so every token above it is kept
    (`rlt_keep(diff, tau_b)`) and the tokens equal to it are split lowest index first
    (`keep_at_kept_ratio`). A clip that keeps everything gets -inf."""
    k = kept_count(diff, kept_ratio, frame_patches)  # (B,)
    ranked = diff.gather(1, _stable_order(diff))  # (B, N) decreasing
    padded = torch.cat([ranked, ranked.new_full((diff.shape[0], 1), float("-inf"))], dim=1)
    return padded.gather(1, k.unsqueeze(1)).squeeze(1)  # the (k+1)-th largest, -inf past N


def run_lengths(keep: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Frames each kept token stands for: itself + the dropped frames after it at its position,
    up to the next kept token there or the clip's end; 0 for dropped tokens. -> (B, N) long.

    keep (B, N) in token order; frame 0 must be kept (RLT's rule guarantees it), so at every
    position the run lengths of the kept tokens add up to T."""
    T, gh, gw = grid
    B, N = keep.shape
    if N != T * gh * gw:
        raise ValueError(f"RLT: keep mask of {N} tokens does not fill the grid {grid}")
    k = keep.view(B, T, gh * gw)
    if not bool(k[:, 0].all()):
        raise ValueError("RLT run lengths: every frame-0 token must be kept (a run starts there)")
    t = torch.arange(T, device=keep.device).view(1, T, 1)
    kept_at = torch.where(k, t, torch.full_like(t, T))  # (B, T, S): own frame if kept, else T
    # next kept frame at or after t: a suffix minimum; after t: shift it left by one frame
    suffix_min = kept_at.flip(1).cummin(dim=1).values.flip(1)  # (B, T, S)
    next_kept = torch.cat([suffix_min[:, 1:], torch.full_like(suffix_min[:, :1], T)], dim=1)
    return ((next_kept - t) * k).view(B, N)


class LengthEmbedding(nn.Module):
    """RLT's length embedding: a learned vector per run length, added to the kept tokens.

    table (num_frames, D), row L-1 for run length L. Zero-initialised, unlike RLT's
    trunc_normal(0.02): a training-free model is unchanged until fine-tuning learns it."""

    def __init__(self, *, num_frames: int, embed_dim: int) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.table = nn.Parameter(torch.zeros(num_frames, embed_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, n, D) kept tokens, lengths (B, n) long run lengths (0 = padding row, left as
        is). -> (B, n, D)."""
        if bool((lengths < 0).any()) or bool((lengths > self.num_frames).any()):
            raise ValueError(f"run lengths must be in [0, {self.num_frames}], got "
                             f"{int(lengths.min())}..{int(lengths.max())}")
        rows = self.table[(lengths - 1).clamp(min=0)]  # (B, n, D)
        return x + rows * (lengths > 0).unsqueeze(-1).to(x.dtype)


__all__ = [
    "RLT_THRESHOLD", "pixel_patches", "differences_from_patches", "patch_differences",
    "rlt_scores", "rlt_keep", "kept_count", "keep_at_kept_ratio", "threshold_for_kept_ratio",
    "run_lengths", "LengthEmbedding",
]
