"""Several clips from one decoded video: training clips (`clips_per_video`) and the test views
(temporal views x spatial crops). Each clip is exactly the clip a separate decode and a plain
float transform give (for the same random draws in training)."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import videored.data.video_dataset as video_dataset
from videored.data import VideoClipDataset, write_video
from videored.data.sampling import frame_indices
from videored.engine.builders import unpack_batch

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
KW = dict(num_frames=4, sampling_rate=4, target_fps=30, crop_size=48, train_jitter_scales=(64, 80),
          mean=MEAN, std=STD)


@pytest.fixture
def video_list(tmp_path):
    """Two lossless 60-frame videos (decoded bytes == written bytes) and their frames."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:96]
    videos = {}
    for name, phase in (("a.mp4", 0.0), ("b.mp4", 2.0)):
        frames = np.stack([np.stack([128 + 90 * np.sin(xx / 7 + t / 4 + phase), 128 + 90 * np.cos(yy / 5 - t / 6),
                                     rng.integers(0, 256, (64, 96))], -1) for t in range(60)])
        videos[name] = np.clip(frames, 0, 255).astype(np.uint8)  # (60, 64, 96, 3)
        write_video(tmp_path / name, videos[name], fps=30, lossless=True)
    (tmp_path / "train.csv").write_text("a.mp4 0\nb.mp4 1\n")
    return tmp_path / "train.csv", videos


def _reference_clip(frames: np.ndarray, crop: int, scales=(64, 80)) -> tuple[torch.Tensor, tuple]:
    """One train clip of (T, H, W, 3) frames, the dataset's draws in its order (short side, top,
    left, flip), in float the plain way: (3, T, crop, crop) normalized, and the draws."""
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).double() / 255  # (3, T, H, W)
    short = int(torch.randint(scales[0], scales[1] + 1, ()).item())
    h, w = video.shape[-2:]
    size = (short, round(w * short / h))  # landscape
    video = F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
    top = int(torch.randint(0, size[0] - crop + 1, ()).item())
    left = int(torch.randint(0, size[1] - crop + 1, ()).item())
    video = video[..., top:top + crop, left:left + crop]
    flip = bool(torch.rand(()) < 0.5)
    if flip:
        video = video.flip(-1)
    mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
    return ((video - mean) / std).float(), (short, top, left, flip)


def test_each_clip_equals_a_separately_decoded_and_transformed_clip(video_list, monkeypatch):
    csv, videos = video_list
    opened = []
    real_open = video_dataset.open_video
    monkeypatch.setattr(video_dataset, "open_video", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    ds = VideoClipDataset(csv, mode="train", clips_per_video=3, **KW)
    random.seed(7)
    torch.manual_seed(7)
    item = ds[1]
    assert opened == [ds.paths[1]]  # one decode for the three clips
    assert item["video"].shape == (3, 3, 4, 48, 48) and item["label"] == 1

    random.seed(7)  # the same draws: the three clips' starts (Python's random), then per clip torch's
    torch.manual_seed(7)
    starts = [frame_indices("videored", 60, 30.0, num_frames=4, sampling_rate=4, target_fps=30, train=True)
              for _ in range(3)]
    assert len({tuple(s) for s in starts}) == 3  # three different clips
    for k, idx in enumerate(starts):
        reference, _ = _reference_clip(videos["b.mp4"][idx], 48)
        # the dataset resizes in uint8 (fixed point): within one grey level of the float resize
        err = (item["video"][k] - reference).abs() * torch.tensor(STD).view(3, 1, 1, 1)
        assert err.max().item() <= 1 / 255 + 1e-6, k
        assert err.mean().item() < 0.3 / 255


def test_one_clip_per_video_keeps_the_item_layout(video_list):
    csv, _ = video_list
    one = VideoClipDataset(csv, mode="train", **KW)
    assert one[0]["video"].shape == (3, 4, 48, 48)
    with pytest.raises(ValueError, match="clips_per_video.*mode='train' only"):
        VideoClipDataset(csv, mode="val", clips_per_video=2, **KW)


def test_a_batch_of_multi_clip_items_unpacks_to_clips_next_to_each_other(video_list):
    csv, _ = video_list
    ds = VideoClipDataset(csv, mode="train", clips_per_video=2, **KW)
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False)))
    assert batch["video"].shape == (2, 2, 3, 4, 48, 48)
    x, y = unpack_batch(batch)
    assert x.shape == (4, 3, 4, 48, 48) and y.tolist() == [0, 0, 1, 1]
    assert torch.equal(x[2], batch["video"][1, 0]) and torch.equal(x[3], batch["video"][1, 1])


def test_masks_follow_their_clips(tmp_path):
    """Synthetic videos carry object masks: with K clips come K masks, each cut like its clip."""
    from videored.data import write_synthetic_dataset
    from videored.data.masks import load_masks

    write_synthetic_dataset(tmp_path, num_classes=2, videos_per_class=1, seed=0)
    kw = dict(num_frames=4, sampling_rate=4, target_fps=30, crop_size=48, train_jitter_scales=(64, 72))
    ds = VideoClipDataset(tmp_path / "train.csv", mode="train", clips_per_video=2, return_masks=True,
                          mean=(0, 0, 0), std=(1, 1, 1), **kw)
    random.seed(1)
    torch.manual_seed(1)
    item = ds[0]
    assert item["mask"].shape == (2, 4, 48, 48) and item["mask"].dtype == torch.bool

    masks = torch.from_numpy(load_masks(ds.paths[0]))  # (F, H, W) bool, every frame
    random.seed(1)
    torch.manual_seed(1)
    starts = [frame_indices("videored", len(masks), 30.0, num_frames=4, sampling_rate=4, target_fps=30,
                            train=True) for _ in range(2)]
    for k, idx in enumerate(starts):
        frames = np.zeros((4, *masks.shape[1:], 3), np.uint8)  # only the draws are used
        _, (short, top, left, flip) = _reference_clip(frames, 48, scales=(64, 72))
        h, w = masks.shape[1:]
        size = (short, round(w * short / h)) if h <= w else (round(h * short / w), short)
        ref = F.interpolate(masks[idx][None].float(), size=size, mode="nearest-exact")[0] > 0.5
        ref = ref[:, top:top + 48, left:left + 48]
        ref = ref.flip(-1) if flip else ref
        assert torch.equal(item["mask"][k], ref), k


def test_test_views_come_from_one_decode_and_equal_their_own_clips(video_list, monkeypatch):
    """3 temporal views x 3 crops of each video: one decode per video, and every item is the
    plain float resize + crop of the written frames of its view."""
    from videored.data import transforms as T

    csv, videos = video_list
    opened = []
    real_open = video_dataset.open_video
    monkeypatch.setattr(video_dataset, "open_video", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    kw = {k: v for k, v in KW.items() if k != "train_jitter_scales"}
    ds = VideoClipDataset(csv, mode="test", num_temporal_views=3, num_spatial_crops=3, **kw)
    items = [ds[i] for i in range(len(ds))]
    assert opened == [ds.paths[0], ds.paths[1]]
    mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
    for item in items:
        view, crop = item["temporal_index"], item["spatial_index"]
        idx = frame_indices("videored", 60, 30.0, num_frames=4, sampling_rate=4, target_fps=30, train=False,
                            view=view, num_views=3)
        frames = videos["ab"[item["video_index"]] + ".mp4"][idx]
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).double() / 255  # (3, T, 64, 96)
        video = F.interpolate(video, size=(48, 72), mode="bilinear", align_corners=False, antialias=True)
        top, left = T.spatial_crop_offsets(48, 72, 48, crop, 3)
        reference = ((video[..., top:top + 48, left:left + 48] - mean) / std).float()
        err = (item["video"] - reference).abs() * std
        assert err.max().item() <= 1 / 255 + 1e-6, (view, crop)
    starts = {int(frame_indices("videored", 60, 30.0, num_frames=4, sampling_rate=4, target_fps=30,
                                train=False, view=v, num_views=3)[0]) for v in range(3)}
    assert len(starts) == 3  # three distinct views were checked


def test_epoch_seed_makes_each_item_a_function_of_its_index(video_list):
    """set_epoch_seed: item i is the same whatever was drawn before it (another worker, another
    order), a different epoch seed gives other draws, and the caller's random streams are left
    exactly where they were."""
    import pickle

    csv, _ = video_list
    ds = VideoClipDataset(csv, mode="train", clips_per_video=2, **KW)
    ds.set_epoch_seed(11)
    random.seed(0)
    torch.manual_seed(0)
    first = ds[1]["video"]
    after = (random.random(), torch.rand(()).item())
    random.seed(0)
    torch.manual_seed(0)
    ds[0]  # another item first, as in a worker that loaded item 0 before
    assert (random.random(), torch.rand(()).item()) == after  # the caller's streams: untouched
    assert torch.equal(pickle.loads(pickle.dumps(ds))[1]["video"], first)  # as in a worker process
    random.seed(123)
    assert torch.equal(ds[1]["video"], first)
    ds.set_epoch_seed(12)
    assert not torch.equal(ds[1]["video"], first)
