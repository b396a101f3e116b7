"""RLT (run-length tokenization) against hand-computed clips and a plain loop reference.

The reference rules, from RLT's paper and code (see videored/models/rlt.py): the difference of a
patch is the mean |a - b| over its C*p*p pixels against the same patch one frame earlier; frame 0
is always kept; a token is kept when its difference is strictly above tau; a kept token's run
length is itself + the dropped frames after it at its position.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videored.models.rlt import (LengthEmbedding, differences_from_patches, keep_at_kept_ratio,
                                 kept_count, patch_differences, pixel_patches, rlt_keep,
                                 rlt_scores, run_lengths, threshold_for_kept_ratio)
from videored.models.tokens import full_token_set, gather_kept

INF = math.inf


# ---- a hand-made clip: C=3, T=4, 4x4 frames, 2x2 patches -> grid (4, 2, 2), N = 16 ----

def _hand_clip() -> torch.Tensor:
    """Static texture per position (multiples of 1/64: every sum below is exact in float32)
    plus a per-(frame, position) shift:
        pos:      0     1      2     3
        t0        0     0      0     0
        t1        0     0      1/2   0
        t2        0     1/16   1/2   1
        t3        0     1/16*  0     1
    (*) at t3, position 1 also gets +3/4 on 2 of its 12 values: mean |diff| = 1/8 exactly.
    Position 0 is the static region: identical in every frame."""
    g = torch.Generator().manual_seed(0)
    texture = torch.randint(0, 64, (3, 1, 4, 4), generator=g).float() / 64  # (C, 1, H, W)
    shift = torch.tensor([[0, 0, 0, 0],
                          [0, 0, 0.5, 0],
                          [0, 1 / 16, 0.5, 1],
                          [0, 1 / 16, 0, 1]])  # (T, positions)
    clip = texture.repeat(1, 4, 1, 1).clone()  # (C, T, H, W)
    for t in range(4):
        for pos in range(4):
            r, c = divmod(pos, 2)
            clip[:, t, 2 * r:2 * r + 2, 2 * c:2 * c + 2] += shift[t, pos]
    clip[0, 3, 0, 2:4] += 0.75  # position 1 (row 0, col 1), frame 3: two of its 12 values
    return clip.unsqueeze(0)  # (1, C, T, H, W)


GRID = (4, 2, 2)
HAND_DIFF = torch.tensor([[INF, INF, INF, INF,
                           0, 0, 0.5, 0,
                           0, 1 / 16, 0, 1,
                           0, 1 / 8, 0.5, 0]])
HAND_KEEP = torch.tensor([[1, 1, 1, 1,  # frame 0: always
                           0, 0, 1, 0,
                           0, 0, 0, 1,  # position 1 drifts by 1/16 < tau: dropped
                           0, 0, 1, 0]], dtype=torch.bool)  # 1/8 == tau: dropped (strict)
HAND_RUNS = torch.tensor([[4, 4, 1, 2,
                           0, 0, 2, 0,
                           0, 0, 0, 2,
                           0, 0, 1, 0]])


def test_hand_clip_differences_keep_and_run_lengths():
    diff = patch_differences(_hand_clip(), patch_size=2)
    assert torch.equal(diff, HAND_DIFF)  # exact: every value is a dyadic fraction
    keep = rlt_keep(diff, 1 / 8)
    assert torch.equal(keep, HAND_KEEP)
    assert torch.equal(run_lengths(keep, GRID), HAND_RUNS)
    # the static region (position 0) is dropped in every frame after the first, one run of 4
    assert not keep[0, 4::4].any() and HAND_RUNS[0, 0] == 4


@pytest.mark.parametrize("lossless", [False, True])
def test_real_video_file_static_background_moving_square(tmp_path, lossless):
    """A real H.264 file (the datasets' default encode, and a lossless one), decoded and
    normalized like the loader: a 16x16 white square moves one patch right per frame over a
    static textured background. Frame t > 0 keeps exactly the two patches the square leaves and
    enters; everything else is a run from frame 0."""
    from videored.data.decoding import open_video
    from videored.data.encoding import write_video
    from videored.data.transforms import uint8_cthw
    from videored.normalization import normalize_uint8
    from videored.data.video_dataset import KINETICS_MEAN, KINETICS_STD

    T = 4
    rng = np.random.default_rng(0)
    background = rng.integers(60, 190, (16, 16, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    frames = np.repeat(background[None], T, 0)  # (T, 64, 64, 3)
    for t in range(T):
        frames[t, 16:32, 16 * t:16 * t + 16] = 240  # patch row 1, column t
    path = tmp_path / "square.mp4"
    write_video(path, frames, fps=30, lossless=lossless)
    decoded = open_video(path, backend="pyav").get_frames(list(range(T)))
    x = normalize_uint8(uint8_cthw(decoded), KINETICS_MEAN, KINETICS_STD)[None]
    diff = patch_differences(x, 16)  # (1, 64): grid (4, 4, 4)
    moving = torch.zeros(T, 4, 4, dtype=torch.bool)
    for t in range(1, T):
        moving[t, 1, t - 1] = moving[t, 1, t] = True
    moving = moving.view(1, -1)
    later = torch.arange(64).view(1, -1) >= 16  # frames 1..3
    assert (diff[moving] > 1.0).all()  # the square: ~2 normalized units
    static = diff[later & ~moving]
    assert (static == 0).all() if lossless else (static < 0.05).all()  # codec noise only
    keep = rlt_keep(diff, 0.1)
    assert torch.equal(keep[:, 16:], moving[:, 16:])
    runs = torch.tensor([[4, 4, 4, 4, 1, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4,   # frame 0
                          0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   # frame 1
                          0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,   # frame 2
                          0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]])  # frame 3
    assert torch.equal(run_lengths(keep, (T, 4, 4)), runs)


def test_strict_rule_at_equality_and_tau_zero():
    diff = patch_differences(_hand_clip(), patch_size=2)
    # just below 1/8, frame 3 position 1 is kept and splits position 1's run into 3 + 1
    keep = rlt_keep(diff, 0.12)
    assert keep[0, 13] and keep.sum() == HAND_KEEP.sum() + 1
    assert run_lengths(keep, GRID)[0, 1::4].tolist() == [3, 0, 0, 1]
    # tau = 0 drops exactly the exact repeats (difference 0) and nothing else
    assert torch.equal(rlt_keep(diff, 0.0), diff != 0)


# ---- a plain loop reference, written from the description ----

def _loop_differences(x: torch.Tensor, p: int) -> torch.Tensor:
    B, C, T, H, W = x.shape
    gh, gw = H // p, W // p
    out = torch.empty(B, T * gh * gw, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            for i in range(gh):
                for j in range(gw):
                    n = t * gh * gw + i * gw + j
                    if t == 0:
                        out[b, n] = INF
                        continue
                    total = 0.0
                    for c in range(C):
                        for u in range(i * p, i * p + p):
                            for v in range(j * p, j * p + p):
                                total += abs(float(x[b, c, t, u, v]) - float(x[b, c, t - 1, u, v]))
                    out[b, n] = total / (C * p * p)
    return out


def _loop_run_lengths(keep: torch.Tensor, grid) -> torch.Tensor:
    T, gh, gw = grid
    S = gh * gw
    out = torch.zeros(keep.shape, dtype=torch.long)
    for b in range(keep.shape[0]):
        for s in range(S):
            for t in range(T):
                if not keep[b, t * S + s]:
                    continue
                length = 1
                while t + length < T and not keep[b, (t + length) * S + s]:
                    length += 1
                out[b, t * S + s] = length
    return out


def _clip_with_repeats(B: int, T: int, H: int, W: int, p: int, seed: int) -> torch.Tensor:
    """Random clip where about half the patches repeat the previous frame (some with noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, T, H, W, generator=g, dtype=torch.float64)
    for t in range(1, T):
        repeat = torch.rand(B, 1, H // p, W // p, generator=g) < 0.5
        repeat = repeat.repeat_interleave(p, 2).repeat_interleave(p, 3)  # (B, 1, H, W)
        noise = 0.05 * torch.randn(B, 3, H, W, generator=g, dtype=torch.float64)
        noise = noise * (torch.rand(B, 1, 1, 1, generator=g) < 0.5)
        x[:, :, t] = torch.where(repeat, x[:, :, t - 1] + noise, x[:, :, t])
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorized_equals_loop_reference(seed):
    B, T, H, W, p = 3, 5, 8, 12, 4
    grid = (T, H // p, W // p)
    x = _clip_with_repeats(B, T, H, W, p, seed)
    diff = patch_differences(x, p)
    assert torch.allclose(diff, _loop_differences(x, p), rtol=0, atol=1e-12)
    for tau in (0.0, 0.1, 0.5):
        keep = rlt_keep(diff, tau)
        assert 0 < int((~keep).sum()) < keep.numel()  # the clip exercises both decisions
        runs = run_lengths(keep, grid)
        assert torch.equal(runs, _loop_run_lengths(keep, grid))
        assert torch.equal(runs.sum(1), torch.full((B,), T * grid[1] * grid[2]))  # cover all


def test_pixel_patches_order_and_half_precision():
    x = torch.arange(2 * 3 * 2 * 4 * 6, dtype=torch.float32).view(2, 3, 2, 4, 6)
    patches = pixel_patches(x, 2)  # (B, N = 2*2*3, 12)
    # token n = frame n // 6, row (n % 6) // 3, col n % 3; features (c, u, v)
    b, n = 1, 10  # frame 1, row 1, col 1
    expected = x[b, :, 1, 2:4, 2:4].reshape(-1)
    assert torch.equal(patches[b, n], expected)
    # a strided (e.g. gathered or sliced) patch tensor gives the same differences as a copy
    strided = patches[:, :, ::2]
    assert not strided.is_contiguous()
    assert torch.equal(differences_from_patches(strided, (2, 2, 3)),
                       differences_from_patches(strided.contiguous(), (2, 2, 3)))
    # half precision is promoted before the difference (same result as float32 of the same data)
    h = _clip_with_repeats(2, 3, 8, 8, 4, seed=3).half()
    assert patches.dtype == torch.float32
    assert torch.equal(patch_differences(h, 4), patch_differences(h.float(), 4))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        patch_differences(torch.zeros(1, 3, 8, 8), 4)
    with pytest.raises(ValueError, match="multiple of patch_size 4"):
        patch_differences(torch.zeros(1, 3, 2, 8, 10), 4)
    with pytest.raises(ValueError, match="frame-0"):
        run_lengths(torch.zeros(1, 8, dtype=torch.bool), (2, 2, 2))
    with pytest.raises(ValueError, match="grid"):
        run_lengths(torch.ones(1, 7, dtype=torch.bool), (2, 2, 2))


def test_display_scores():
    scores = rlt_scores(HAND_DIFF)
    assert torch.equal(scores, torch.tensor([[1.0, 1, 1, 1, 0, 0, 0.5, 0,
                                              0, 1 / 16, 0, 1, 0, 1 / 8, 0.5, 0]]))
    static = torch.tensor([[INF, INF, 0.0, 0.0]])  # a fully static clip: no division by zero
    assert torch.equal(rlt_scores(static), torch.tensor([[1.0, 1, 0, 0]]))


def test_single_frame_keeps_everything():
    diff = patch_differences(torch.randn(2, 3, 1, 8, 8), 4)
    assert torch.isinf(diff).all() and rlt_keep(diff, 10.0).all()
    assert torch.equal(run_lengths(rlt_keep(diff, 10.0), (1, 2, 2)), torch.ones(2, 4).long())


# ---- budget mapping: a per-clip threshold for a kept ratio ----

def _loop_stable_topk(d: list[float], k: int) -> set[int]:
    return set(sorted(range(len(d)), key=lambda i: (-d[i], i))[:k])


def test_kept_ratio_keeps_round_rN_and_frame_zero():
    T, gh, gw = 6, 2, 3
    S, N = gh * gw, T * gh * gw
    x = _clip_with_repeats(4, T, 8, 12, 4, seed=5)
    diff = patch_differences(x, 4)
    for r in (0.0, 0.1, 0.33, 0.5, 0.77, 1.0):
        keep = keep_at_kept_ratio(diff, r, S)
        want = max(round(r * N), S)
        assert keep.sum(1).tolist() == [want] * 4
        assert keep[:, :S].all()  # frame 0 always
        tau = threshold_for_kept_ratio(diff, r, S)
        # RLT's own rule at tau keeps every token of the top-k above the threshold ...
        strict = rlt_keep(diff, tau)
        assert not (strict & ~keep).any()
        # ... and the two masks differ only at tokens tied with tau
        assert ((strict != keep) <= (diff == tau.unsqueeze(1))).all()
        for b in range(4):
            assert set(keep[b].nonzero().flatten().tolist()) == _loop_stable_topk(
                diff[b].tolist(), want)
        if want == N:
            assert torch.isinf(tau).all() and (tau < 0).all()
    assert kept_count(diff, 0.5, S).tolist() == [round(0.5 * N)] * 4


def test_kept_ratio_ties_lowest_index_first_and_per_clip_ratios():
    S = 2  # grid (4, 1, 2): N = 8
    diff = torch.tensor([[INF, INF, 0.25, 0.25, 0.25, 0.25, 0.125, 0.25],
                         [INF, INF, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    keep = keep_at_kept_ratio(diff, 0.5, S)  # 4 tokens: frame 0 + the first two tied
    assert keep.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]]
    assert threshold_for_kept_ratio(diff, 0.5, S).tolist() == [0.25, 0.0]
    # one ratio per clip (B,)
    keep = keep_at_kept_ratio(diff, torch.tensor([0.75, 0.25]), S)
    assert keep.sum(1).tolist() == [6, 2]
    assert keep[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        keep_at_kept_ratio(diff, 1.5, S)


def test_batched_equals_one_by_one_and_batch_order():
    T, gh, gw = 5, 2, 3
    x = _clip_with_repeats(4, T, 8, 12, 4, seed=7)
    x[2] = x[1]  # a duplicated clip: equal differences across the batch as well
    perm = torch.tensor([3, 0, 2, 1])
    ratio = torch.tensor([0.4, 0.6, 0.5, 0.9])
    diff = patch_differences(x, 4)
    keep = keep_at_kept_ratio(diff, ratio, gh * gw)
    tau = threshold_for_kept_ratio(diff, ratio, gh * gw)
    runs = run_lengths(keep, (T, gh, gw))
    for b in range(4):
        d1 = patch_differences(x[b:b + 1], 4)
        assert torch.equal(d1, diff[b:b + 1])
        k1 = keep_at_kept_ratio(d1, float(ratio[b]), gh * gw)
        assert torch.equal(k1, keep[b:b + 1])
        assert torch.equal(threshold_for_kept_ratio(d1, float(ratio[b]), gh * gw), tau[b:b + 1])
        assert torch.equal(run_lengths(k1, (T, gh, gw)), runs[b:b + 1])
        assert torch.equal(rlt_keep(d1, 0.3), rlt_keep(diff, 0.3)[b:b + 1])
    dp = patch_differences(x[perm], 4)
    assert torch.equal(keep_at_kept_ratio(dp, ratio[perm], gh * gw), keep[perm])
    assert torch.equal(threshold_for_kept_ratio(dp, ratio[perm], gh * gw), tau[perm])
    # per-clip thresholds (B,) through RLT's rule, batched == one by one
    assert torch.equal(rlt_keep(diff, tau), torch.cat([rlt_keep(diff[b:b + 1], tau[b])
                                                       for b in range(4)]))


# ---- length embedding ----

def test_length_embedding_zero_init_lookup_and_padding():
    T, D = 4, 3
    emb = LengthEmbedding(num_frames=T, embed_dim=D)
    tokens = full_token_set(torch.randn(1, 16, D))
    kept = gather_kept(tokens, HAND_KEEP)  # the hand clip's 7 kept tokens
    lengths = HAND_RUNS.gather(1, kept.index)  # (1, 7): runs of the kept rows, token order
    assert lengths.tolist() == [[4, 4, 1, 2, 2, 2, 1]]
    assert torch.equal(emb(kept.x, lengths), kept.x)  # zero init: training-free is unchanged
    with torch.no_grad():
        emb.table.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [5.0, 5, 5]]))
    out = emb(kept.x, lengths)
    expected = kept.x + torch.tensor([[5.0, 5, 5], [5, 5, 5], [1, 0, 0], [0, 1, 0], [0, 1, 0],
                                      [0, 1, 0], [1, 0, 0]]).unsqueeze(0)
    assert torch.equal(out, expected)
    # padding rows (length 0) are left unchanged; the table learns from the rows used
    x = torch.randn(2, 2, D)
    out = emb(x, torch.tensor([[3, 0], [1, 0]]))
    assert torch.equal(out[:, 1], x[:, 1])
    out.sum().backward()
    assert emb.table.grad[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        emb(x, torch.tensor([[5, 1], [1, 1]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    T, gh, gw = 5, 2, 3
    x = _clip_with_repeats(3, T, 8, 12, 4, seed=11).float()
    ratio = torch.tensor([0.3, 0.5, 0.8])
    cpu = patch_differences(x, 4)
    gpu = patch_differences(x.cuda(), 4)
    assert torch.allclose(gpu.cpu(), cpu, rtol=0, atol=1e-6)
    keep = keep_at_kept_ratio(cpu, ratio, gh * gw)
    assert torch.equal(keep_at_kept_ratio(cpu.cuda(), ratio.cuda(), gh * gw).cpu(), keep)
    assert torch.equal(threshold_for_kept_ratio(cpu.cuda(), ratio.cuda(), gh * gw).cpu(),
                       threshold_for_kept_ratio(cpu, ratio, gh * gw))
    assert torch.equal(run_lengths(keep.cuda(), (T, gh, gw)).cpu(), run_lengths(keep, (T, gh, gw)))
