"""Synthetic moving-object videos: real H.264 files, deterministic, label = object motion, masks aligned."""
import json

import av
import numpy as np
import pytest
import torch

from videored.data import SynthConfig, VideoClipDataset, load_masks, open_video, render_video, write_synthetic_dataset
from videored.data.synthetic import class_names


def _saturation(rgb):
    """HSV saturation of (..., 3) uint8/float RGB in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    mx, mn = rgb.max(-1), rgb.min(-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-9), 0.0)


@pytest.mark.parametrize("label", range(4))
def test_render_object_moves_in_class_direction_inside_safe_region(label):
    cfg = SynthConfig(task="direction")
    for seed in range(3):
        frames, masks = render_video(label, 4, np.random.default_rng([seed, 0, label, 7]), cfg)
        assert frames.shape == (60, 80, 88, 3) and masks.shape == (60, 80, 88) and masks.dtype == bool
        frac = masks.mean(axis=(1, 2))
        assert frac.min() >= 0.05 and frac.max() <= 0.15  # a minority of every frame
        cols = np.nonzero(masks.any(axis=(0, 1)))[0]
        rows = np.nonzero(masks.any(axis=(0, 2)))[0]
        # the columns every test crop sees are [W - H, H) = [8, 80)
        assert cols.min() >= 8 and cols.max() < 80 and rows.min() >= 0 and rows.max() < 80
        # mask centroid moves along the class angle (0 right, 90 down, 180 left, 270 up)
        ys, xs = np.mgrid[0:80, 0:88]
        c0 = np.array([xs[masks[0]].mean(), ys[masks[0]].mean()])
        c1 = np.array([xs[masks[-1]].mean(), ys[masks[-1]].mean()])
        move = c1 - c0
        theta = 2 * np.pi * label / 4
        assert np.dot(move, [np.cos(theta), np.sin(theta)]) / np.linalg.norm(move) > 0.99
        assert 26 <= np.linalg.norm(move) <= 32  # object_travel range
        # the object is the saturated thing; background and distractors are muted
        assert _saturation(frames[masks]).mean() > 2.5 * _saturation(frames[~masks]).mean()


def test_colour_task_label_is_the_colour():
    cfg = SynthConfig(task="colour")
    hues = []
    for label in range(3):
        frames, masks = render_video(label, 3, np.random.default_rng(label), cfg)
        body = frames[0][masks[0]].astype(float).mean(0)
        hues.append(np.argmax(body))  # palette: red, green, blue dominate their channel
    assert hues == [0, 1, 2]


def test_label_lives_in_the_object_not_the_background():
    """Nearest-centroid on mean colour: perfect from the object's pixels, near chance from the rest."""
    cfg = SynthConfig(task="colour", num_frames=4)
    feats = {"object": [], "background": []}
    labels = []
    for label in range(3):
        for i in range(24):
            frames, masks = render_video(label, 3, np.random.default_rng([9, label, i]), cfg)
            feats["object"].append(frames[masks].mean(0))
            feats["background"].append(frames[~masks].mean(0))
            labels.append(label)
    y = np.array(labels)
    train, val = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    acc = {}
    for name, f in feats.items():
        f = np.array(f)
        centroids = np.stack([f[train & (y == c)].mean(0) for c in range(3)])
        pred = np.linalg.norm(f[val][:, None] - centroids[None], axis=-1).argmin(1)
        acc[name] = (pred == y[val]).mean()
    assert acc["object"] == 1.0 and acc["background"] < 0.6, acc


def test_class_names():
    assert class_names(4, "direction") == ["right", "down", "left", "up"]
    assert class_names(8, "direction")[1] == "down_right" and class_names(3, "direction")[1] == "angle_120"
    assert class_names(3) == ["red", "green", "blue"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = write_synthetic_dataset(root, num_classes=2, videos_per_class=2, seed=3, val_per_class=1,
                                      test_per_class=1, cfg=SynthConfig(task="direction"))
    return root, summary


def test_files_are_real_h264_at_30fps(synth):
    root, summary = synth
    assert summary["videos"] == {"train": 4, "val": 2, "test": 2}
    lines = (root / "train.csv").read_text().splitlines()
    assert lines[0] == "videos/train/train_c00_0000.mp4 0" and len(lines) == 4  # relative paths
    assert (root / "classes.txt").read_text().splitlines() == ["right", "left"]
    info = json.loads((root / "dataset.json").read_text())
    assert info["hflip_preserves_label"] is False and info["seed"] == 3
    path = root / "videos/train/train_c01_0001.mp4"
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.average_rate == 30 and s.frames == 60
        assert (s.codec_context.width, s.codec_context.height) == (88, 80)
    masks = load_masks(path)
    assert masks.shape == (60, 80, 88) and masks.dtype == bool
    # decoded frames show the saturated object exactly where the stored mask says
    with open_video(path, "auto") as v:
        frames = v.get_frames(range(60))
    assert _saturation(frames[masks]).mean() > 2.5 * _saturation(frames[~masks]).mean()


def test_deterministic_for_a_seed(synth, tmp_path):
    root, _ = synth
    cfg = SynthConfig(task="direction")
    again = tmp_path / "again"
    write_synthetic_dataset(again, num_classes=2, videos_per_class=2, seed=3, val_per_class=1, test_per_class=1, cfg=cfg)
    other = tmp_path / "other"
    write_synthetic_dataset(other, num_classes=2, videos_per_class=2, seed=4, val_per_class=1, test_per_class=1, cfg=cfg)
    for name in ("train.csv", "val.csv", "test.csv", "classes.txt"):
        assert (root / name).read_text() == (again / name).read_text()
    rel = "videos/val/val_c01_0000.mp4"
    assert (root / rel).read_bytes() == (again / rel).read_bytes()  # x264 single-threaded: same bytes
    np.testing.assert_array_equal(load_masks(root / rel), load_masks(again / rel))
    assert not np.array_equal(load_masks(root / rel), load_masks(other / rel))


@pytest.mark.parametrize("mode", ["train", "test"])
def test_dataset_masks_follow_the_video_transform(synth, mode):
    """Resize + crop (+ flip in train) applied to the mask must land on the object's pixels."""
    root, _ = synth
    ds = VideoClipDataset(root / f"{mode}.csv", mode=mode, num_frames=8, sampling_rate=7, crop_size=64,
                          train_jitter_scales=(64, 80), return_masks=True, train_flip=True,
                          mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(1)
    ious = []
    for i in range(len(ds)):
        item = ds[i]
        assert item["mask"].shape == (8, 64, 64) and item["mask"].dtype == torch.bool
        rgb = item["video"].permute(1, 2, 3, 0).numpy()  # (T, H, W, 3) in [0, 1]
        sat = _saturation(rgb) > 0.6  # object body and trail are saturated; clutter is not
        m = item["mask"].numpy()
        ious.append((sat & m).sum() / (sat | m).sum())
    assert min(ious) > 0.6, ious


def test_test_crops_all_contain_the_whole_object(synth):
    root, _ = synth
    ds = VideoClipDataset(root / "test.csv", mode="test", num_frames=8, sampling_rate=7, crop_size=64,
                          num_spatial_crops=3, return_masks=True)
    for v in range(ds.num_videos):
        sums = [ds[3 * v + k]["mask"].sum().item() for k in range(3)]
        assert sums[0] == sums[1] == sums[2] > 0  # no crop cuts the object


_ENCODE_SCRIPT = """
import sys
import numpy as np
from videored.data.synthetic import SPLITS, render_video
from videored.data.encoding import write_video
for i in range(12):
    frames, _ = render_video(0, 4, np.random.default_rng([0, SPLITS["train"], 0, i]))
    write_video(f"{sys.argv[1]}/{i}.mp4", frames, fps=30, crf=20)
"""


def test_same_bytes_in_another_process(tmp_path):
    """Encodes of the same frames are byte-identical across processes, not only within one (with
    x264's mbtree on, about 1 video in 4 differed from its third frame on between processes)."""
    import subprocess
    import sys

    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        subprocess.run([sys.executable, "-c", _ENCODE_SCRIPT, str(d)], check=True, timeout=300)
    differ = [i for i in range(12) if (dirs[0] / f"{i}.mp4").read_bytes() != (dirs[1] / f"{i}.mp4").read_bytes()]
    assert differ == []
