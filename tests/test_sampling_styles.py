"""`data.sampling`: the frame conventions of mmaction2 and TimeSformer, hand-computed and end to end."""
from __future__ import annotations

import random

import numpy as np
import pytest

from videored.data import VideoClipDataset, write_video
from videored.data.sampling import frame_indices, mmaction_indices, timesformer_indices


def test_mmaction_sample_frames_by_hand():
    # test: span (8-1)*32 + 1 = 225; a 300-frame video leaves 75, offset 75 // 2 = 37
    assert mmaction_indices(300, 8, 32, train=False).tolist() == [37 + 32 * k for k in range(8)]
    # shorter than the span: offset 0 and indices wrapped around (out_of_bound_opt="loop")
    assert mmaction_indices(200, 8, 32, train=False).tolist() == [0, 32, 64, 96, 128, 160, 192, 24]
    # train: offset uniform over 0 .. 300 - 256 = 44, frames exactly 32 apart
    random.seed(0)
    offsets = set()
    for _ in range(2000):
        idx = mmaction_indices(300, 8, 32, train=True)
        assert (np.diff(idx) == 32).all()
        offsets.add(int(idx[0]))
    assert offsets == set(range(45))
    # three test views spread over 0 .. 75
    assert [int(mmaction_indices(300, 8, 32, False, v, 3)[0]) for v in range(3)] == [0, 38, 75]


def test_timesformer_linspace_by_hand():
    # 30 fps: a clip of 8*32 = 256 frames; one test view starts at frame 0;
    # linspace(0, 255, 8) = k * 36.43 -> truncated
    assert timesformer_indices(300, 30, 8, 32, 30, train=False).tolist() == [
        0, 36, 72, 109, 145, 182, 218, 255]
    # 15 fps: the clip covers the same 8.5 s = 128 frames: k * 127/7 = k * 18.14
    assert timesformer_indices(300, 15, 8, 32, 30, train=False).tolist() == [
        0, 18, 36, 54, 72, 90, 108, 127]
    # view 2 of 3 starts at delta * 2/3 = 44 * 2/3 = 29.33
    assert timesformer_indices(300, 30, 8, 32, 30, False, 2, 3).tolist() == [
        29, 65, 102, 138, 175, 211, 247, 284]
    # short video: clamped to the last frame
    assert timesformer_indices(100, 30, 8, 32, 30, train=False).tolist()[-3:] == [99, 99, 99]
    with pytest.raises(ValueError, match="unknown sampling"):
        frame_indices("slowfast", 300, 30, num_frames=8, sampling_rate=32, target_fps=30, train=False)


def _index_coded_video(path, num_frames, fps, h=32, w=48):
    """Lossless video whose frame i has every pixel = (i % 256, i // 256, 0)."""
    frames = np.zeros((num_frames, h, w, 3), dtype=np.uint8)
    frames[..., 0] = (np.arange(num_frames) % 256)[:, None, None]
    frames[..., 1] = (np.arange(num_frames) // 256)[:, None, None]
    write_video(path, frames, fps=fps, lossless=True)


def _codes(video) -> list[int]:
    return ((video[0, :, 0, 0] * 255).round() + 256 * (video[1, :, 0, 0] * 255).round()).long().tolist()


@pytest.mark.parametrize("style,expected", [
    ("mmaction", [37 + 32 * k for k in range(8)]),  # raw frames: the 25 fps rate is ignored
    ("timesformer", [0, 30, 60, 91, 121, 151, 182, 212]),  # 8.5 s at 25 fps = 213.3 frames
])
def test_dataset_decodes_each_conventions_frames(tmp_path, style, expected):
    _index_coded_video(tmp_path / "v.mp4", 300, 25)
    (tmp_path / "list.csv").write_text("v.mp4 0\n")
    kw = dict(num_frames=8, sampling_rate=32, target_fps=30, crop_size=32, mean=(0, 0, 0),
              std=(1, 1, 1), sampling=style)
    test = VideoClipDataset(tmp_path / "list.csv", mode="test", num_spatial_crops=1, **kw)
    assert _codes(test[0]["video"]) == expected
    train = VideoClipDataset(tmp_path / "list.csv", mode="train", train_jitter_scales=(32, 32), **kw)
    for _ in range(3):
        codes = _codes(train[0]["video"])
        steps = np.diff(codes)
        assert (steps == 32).all() if style == "mmaction" else ((steps >= 30) & (steps <= 31)).all()
