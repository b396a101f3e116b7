"""The benchmark protocol (`interpretability.SegmentationScore.add_benchmark`) against a hand
computation of the public ImageNet-Segmentation rule (imagenet_seg_eval.py of
hila-chefer/Transformer-Explainability): bilinear x patch (align_corners False), min-max, mean
threshold, counts accumulated over the set, mAP = mean over images of the AP of the 2-channel
soft output. Masks come from a tiny file in gtsegs_ijcv.mat's layout."""
import math

import numpy as np
import pytest
import torch

from videored.interpretability import SegmentationScore, average_precision

from _mask_sets import _write_gtsegs


def _bilinear(m, s):
    """Plain loops: out[y, x] from the source coordinate (o + 0.5) / s - 0.5 (clamped at 0),
    linear between the two nearest cells (edge cells repeat) -- half-pixel centres."""
    gh, gw = m.shape
    out = np.zeros((gh * s, gw * s))

    def coord(o, n):
        src = max((o + 0.5) / s - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n - 1)
        return i0, min(i0 + 1, n - 1), src - i0

    for y in range(gh * s):
        y0, y1, wy = coord(y, gh)
        for x in range(gw * s):
            x0, x1, wx = coord(x, gw)
            top = (1 - wx) * m[y0, x0] + wx * m[y0, x1]
            bottom = (1 - wx) * m[y1, x0] + wx * m[y1, x1]
            out[y, x] = (1 - wy) * top + wy * bottom
    return out


def _ap(scores, labels):
    """Step-wise AP over the distinct thresholds, by a loop (sklearn's definition)."""
    total, ap, prev_recall = labels.sum(), 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        sel = scores >= t
        tp = (labels & sel).sum()
        recall, precision = tp / total, tp / sel.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_bilinear_upsampling_is_the_half_pixel_rule():
    from videored.interpretability import benchmark_soft_maps

    m = np.random.default_rng(2).random((3, 4))
    up = _bilinear(m, 8)
    want = (up - up.min()) / (up.max() - up.min())
    got = benchmark_soft_maps(torch.tensor(m).reshape(1, 12), (1, 3, 4), 8)[0, 0]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_average_precision_by_hand():
    # ranks: 1 (pos), 2 (neg), 3 (pos), 4 (neg): AP = 1/2 * 1 + 1/2 * 2/3
    s, y = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, False, True, False])
    assert average_precision(s, y) == pytest.approx(0.5 + 1 / 3)
    # tied scores enter together: one threshold for both: recall 1, precision 1/2
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == 0.5
    assert math.isnan(average_precision(s, torch.zeros(4, dtype=torch.bool)))


def test_benchmark_metrics_equal_the_hand_computation(tmp_path):
    pytest.importorskip("h5py")
    from videored.data.imagenet_seg import ImageNetSegmentation

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(4)]
    masks = []
    for i in range(4):
        m = np.zeros((40, 36), bool)
        m[4 + 3 * i:26 + i, 3:19 + 3 * i] = True
        masks.append(m)
    _write_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks)
    ds = ImageNetSegmentation(tmp_path / "gtsegs_ijcv.mat", img_size=32)
    target = torch.stack([ds[i]["mask"] for i in range(4)]).bool()  # (4, 32, 32)
    assert 0 < target.float().mean() < 1
    # hand-made 4 x 4 patch maps in quarters, 0 in the top-left and 1 in the bottom-right
    # corner (which bilinear upsampling keeps exactly): every upsampled value is a multiple of
    # 1/1024 and min-max divides by 1, so both computations are exact and ties stay ties
    maps = torch.tensor(rng.integers(0, 5, (4, 16)) / 4)
    maps[:, 0], maps[:, 15] = 0.0, 1.0
    maps[1, 1:8] = 0.25  # more ties
    maps[2] = 0.75  # a constant map: the reference's NaN -> background, soft map 0
    score = SegmentationScore()
    score.add_benchmark(maps[:3], target[:3, None], (1, 4, 4), 8)  # two batches accumulate
    score.add_benchmark(maps[3:], target[3:, None], (1, 4, 4), 8)
    got = score.metrics("benchmark")

    tp = tn = fp = fn = 0
    aps = []
    for b in range(4):
        up = _bilinear(maps[b].numpy().reshape(4, 4), 8)
        t = target[b].numpy()
        if up.max() == up.min():
            soft, pred = np.zeros_like(up), np.zeros_like(t)  # NaN map: nothing predicted
            two = (np.zeros(up.size), np.zeros(up.size))  # both channels zeroed
        else:
            soft = (up - up.min()) / (up.max() - up.min())
            pred = soft > soft.mean()
            two = (1 - soft.ravel(), soft.ravel())
        tp += (pred & t).sum(); tn += (~pred & ~t).sum()
        fp += (pred & ~t).sum(); fn += (~pred & t).sum()
        aps.append(_ap(np.concatenate(two), np.concatenate([~t.ravel(), t.ravel()])))
    want = {"pixel_acc": 100 * (tp + tn) / (tp + tn + fp + fn),
            "mean_acc": 100 * (tp / (tp + fn) + tn / (tn + fp)) / 2,
            "miou": 100 * (tp / (tp + fp + fn) + tn / (tn + fn + fp)) / 2,
            "map": 100 * np.mean(aps)}
    assert got == pytest.approx(want, rel=1e-12)
    assert aps[2] == pytest.approx(0.5)  # the constant map: every score tied


def test_benchmark_maps_are_scored_frame_by_frame():
    """A video clip (T frames) scores like T images: per-frame min-max, mean and AP."""
    rng = np.random.default_rng(1)
    maps = torch.tensor(rng.random((1, 2 * 9)))  # T = 2 frames of 3 x 3 patches
    target = torch.tensor(rng.random((1, 2, 12, 12)) > 0.6)
    video = SegmentationScore()
    video.add_benchmark(maps, target, (2, 3, 3), 4)
    frames = SegmentationScore()
    frames.add_benchmark(maps.view(2, 9), target.view(2, 1, 12, 12), (1, 3, 3), 4)
    assert torch.equal(video.confusion, frames.confusion) and video.aps == frames.aps
    assert video.metrics("benchmark") == frames.metrics("benchmark")


def test_pixel_maps_are_scored_without_upsampling():
    """Full LRP's pixel maps (B, T, H, W) go straight to min-max and the mean threshold."""
    rng = np.random.default_rng(3)
    maps = torch.tensor(rng.integers(0, 9, (2, 1, 8, 8)) / 8.0)  # exact in double
    maps[:, 0, 0, 0], maps[:, 0, -1, -1] = 0.0, 1.0
    target = torch.tensor(rng.random((2, 1, 8, 8)) > 0.5)
    score = SegmentationScore()
    score.add_benchmark(maps, target, (1, 2, 2), 4)
    tp = tn = fp = fn = 0
    aps = []
    for b in range(2):
        soft, t = maps[b, 0].numpy(), target[b, 0].numpy()  # min 0, max 1: min-max is identity
        pred = soft > soft.mean()
        tp += (pred & t).sum(); tn += (~pred & ~t).sum()
        fp += (pred & ~t).sum(); fn += (~pred & t).sum()
        aps.append(_ap(np.concatenate([1 - soft.ravel(), soft.ravel()]),
                       np.concatenate([~t.ravel(), t.ravel()])))
    assert score.metrics("benchmark") == pytest.approx(
        {"pixel_acc": 100 * (tp + tn) / 128, "mean_acc": 100 * (tp / (tp + fn) + tn / (tn + fp)) / 2,
         "miou": 100 * (tp / (tp + fp + fn) + tn / (tn + fn + fp)) / 2, "map": 100 * np.mean(aps)},
        rel=1e-12)
