"""Frame indices exactly as specified for known fps and length; crop positions; transforms."""
import random

import numpy as np
import pytest
import torch

from videored.data import VideoClipDataset, write_video
from videored.data import transforms as T
from videored.data.sampling import centred_start, clip_indices, clip_span, random_start


def test_span_and_centred_indices_fps30():
    # 8 frames x rate 32 at 30 fps in a 30 fps video: span 256 frames; a 300-frame video leaves
    # 44 spare frames, the centred clip starts at 22 and takes every 32nd frame.
    span = clip_span(8, 32, 30, 30.0)
    assert span == 256
    start = centred_start(300, span)
    assert start == 22
    assert clip_indices(start, span, 8, 300).tolist() == [22, 54, 86, 118, 150, 182, 214, 246]


def test_indices_converted_by_video_fps():
    # A 25 fps video: the same 256/30 s = 8.533 s clip spans 213.33 frames, 26.67 apart.
    # 250 frames -> start (250 - 213.33) / 2 = 18.33; frame k = floor(18.33 + 26.67 k).
    span = clip_span(8, 32, 30, 25.0)
    assert span == pytest.approx(640 / 3)
    start = centred_start(250, span)
    assert start == pytest.approx(55 / 3)
    assert clip_indices(start, span, 8, 250).tolist() == [18, 45, 71, 98, 125, 151, 178, 205]
    # 60 fps: twice the frames, stride 64
    assert clip_indices(centred_start(600, 512.0), 512.0, 8, 600).tolist() == [44 + 64 * k for k in range(8)]


def test_ntsc_rate_does_not_floor_down():
    # 29.97 fps with target 29.97: stride must be exactly 32, not 31 from float round-off
    span = clip_span(8, 32, 30000 / 1001, 30000 / 1001)
    assert clip_indices(0.0, span, 8, 300).tolist() == [32 * k for k in range(8)]


def test_short_video_clamped():
    # 2 frames, span 256: start 0, indices past the end clamp to the last frame
    assert clip_indices(centred_start(2, 256.0), 256.0, 8, 2).tolist() == [0, 1, 1, 1, 1, 1, 1, 1]
    # 100 frames: start 0, k*32 clamped to 99
    assert clip_indices(centred_start(100, 256.0), 256.0, 8, 100).tolist() == [0, 32, 64, 96, 99, 99, 99, 99]


def test_multiple_temporal_views_first_to_last():
    span = 256.0
    starts = [centred_start(356, span, v, 3) for v in range(3)]
    assert starts == [0.0, 50.0, 100.0]
    assert clip_indices(starts[2], span, 8, 356)[-1] == 100 + 7 * 32
    with pytest.raises(ValueError):
        centred_start(356, span, 3, 3)


def test_random_start_uniform_within_bounds():
    random.seed(0)
    starts = np.array([random_start(300, 30.0, 256.0) for _ in range(2000)])
    assert starts.min() >= 0 and starts.max() <= 44
    # uniform on [0, 44]: mean 22, std 44/sqrt(12) = 12.7
    assert abs(starts.mean() - 22) < 1.0 and abs(starts.std() - 44 / np.sqrt(12)) < 1.0
    # the last index always stays inside the video and frames stay exactly 32 apart
    for s in starts[:50]:
        idx = clip_indices(s, 256.0, 8, 300)
        assert idx[-1] <= 299 and set(np.diff(idx).tolist()) == {32}


def test_crop_offsets_landscape_and_portrait():
    # landscape 224 x 298 (340x256 resized to short side 224): left / centre / right
    assert [T.spatial_crop_offsets(224, 298, 224, i, 3) for i in range(3)] == [(0, 0), (0, 37), (0, 74)]
    # portrait 298 x 224: top / centre / bottom
    assert [T.spatial_crop_offsets(298, 224, 224, i, 3) for i in range(3)] == [(0, 0), (37, 0), (74, 0)]
    # one crop: the centre; the short side is centred when larger than the crop
    assert T.spatial_crop_offsets(240, 300, 224, 0, 1) == (8, 38)


def test_resize_sizes_and_mask_alignment():
    assert T.resized_hw(256, 340, 224) == (224, 298)
    assert T.resized_hw(340, 256, 224) == (298, 224)
    video = torch.rand(3, 2, 40, 60)
    assert T.short_side_resize(video, 20).shape == (3, 2, 20, 30)
    # a block mask and a video painted with the same block stay aligned after resize
    mask = torch.zeros(2, 40, 60, dtype=torch.bool)
    mask[:, 8:24, 20:44] = True
    painted = mask[None].float().expand(3, -1, -1, -1)
    small_video = T.short_side_resize(painted, 20)
    small_mask = T.short_side_resize_mask(mask, 20)
    assert small_mask.shape == (2, 20, 30)
    assert small_mask.sum().item() == 2 * 8 * 12  # exact halving of an even-aligned block
    assert torch.equal(small_video[0] > 0.5, small_mask)


def test_normalize_and_flip():
    video = torch.arange(2 * 1 * 1 * 3, dtype=torch.float32).view(2, 1, 1, 3)
    out = T.normalize(video, (1.0, 2.0), (2.0, 4.0))
    assert out[0, 0, 0].tolist() == [-0.5, 0.0, 0.5] and out[1, 0, 0].tolist() == [0.25, 0.5, 0.75]
    assert T.hflip(video)[0, 0, 0].tolist() == [2.0, 1.0, 0.0]


def _index_coded_video(path, num_frames, fps, h=32, w=48):
    """Lossless video whose frame i has every pixel = (i % 256, i // 256, 0)."""
    frames = np.zeros((num_frames, h, w, 3), dtype=np.uint8)
    frames[..., 0] = (np.arange(num_frames) % 256)[:, None, None]
    frames[..., 1] = (np.arange(num_frames) // 256)[:, None, None]
    write_video(path, frames, fps=fps, lossless=True)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_dataset_decodes_exactly_the_specified_frames(tmp_path, backend):
    """End to end: a 25 fps, 250-frame video; the test clip must be frames floor(55/3 + 80k/3)."""
    _index_coded_video(tmp_path / "v.mp4", 250, 25)
    (tmp_path / "list.csv").write_text("v.mp4 0\n")
    ds = VideoClipDataset(tmp_path / "list.csv", mode="test", num_frames=8, sampling_rate=32, target_fps=30,
                          crop_size=32, num_spatial_crops=1, backend=backend, mean=(0, 0, 0), std=(1, 1, 1))
    item = ds[0]
    assert not item["failed"]
    codes = (item["video"][0, :, 0, 0] * 255).round() + 256 * (item["video"][1, :, 0, 0] * 255).round()
    assert codes.long().tolist() == [18, 45, 71, 98, 125, 151, 178, 205]
    # train mode: random start, but always 8 frames 26.67 apart inside the video
    ds_train = VideoClipDataset(tmp_path / "list.csv", mode="train", num_frames=8, sampling_rate=32, target_fps=30,
                                crop_size=32, train_jitter_scales=(32, 32), backend=backend, mean=(0, 0, 0), std=(1, 1, 1))
    for _ in range(3):
        v = ds_train[0]["video"]
        codes = ((v[0, :, 0, 0] * 255).round() + 256 * (v[1, :, 0, 0] * 255).round()).long()
        # frame k = floor(s + 80k/3) for some s in [0, 36.67]: offsets from frame 0 within +1
        assert 0 <= codes[0].item() <= 36
        for k, off in enumerate((codes - codes[0]).tolist()):
            assert 80 * k // 3 <= off <= 80 * k // 3 + 1


def _column_coded_video(path, h, w, t=3):
    """Lossless video whose pixel (y, x) = (x, y, 0): crops can be read back from the values."""
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[..., 0] = np.arange(w)[None, None, :]
    frames[..., 1] = np.arange(h)[None, :, None]
    write_video(path, frames, fps=30, lossless=True)


@pytest.mark.parametrize("h,w,expected", [(32, 48, [(0, 0), (0, 8), (0, 16)]), (48, 32, [(0, 0), (8, 0), (16, 0)])])
def test_dataset_three_crops_positions(tmp_path, h, w, expected):
    """Short side already == crop size (no resize): crop k must start at the expected (top, left)."""
    _column_coded_video(tmp_path / "v.mp4", h, w)
    (tmp_path / "list.csv").write_text("v.mp4 3\n")
    ds = VideoClipDataset(tmp_path / "list.csv", mode="test", num_frames=2, sampling_rate=1, crop_size=32,
                          num_spatial_crops=3, mean=(0, 0, 0), std=(1, 1, 1))
    assert len(ds) == 3
    for k, (top, left) in enumerate(expected):
        item = ds[k]
        assert (item["spatial_index"], item["temporal_index"], item["video_index"], item["label"]) == (k, 0, 0, 3)
        x = (item["video"][0, 0] * 255).round().long()  # (32, 32) column codes
        y = (item["video"][1, 0] * 255).round().long()
        assert torch.equal(x, left + torch.arange(32).expand(32, 32))
        assert torch.equal(y, top + torch.arange(32)[:, None].expand(32, 32))
