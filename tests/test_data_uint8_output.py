"""uint8 workers + normalization on the device == the float pipeline, to float rounding; test mode
resizes a view once for its three crops."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import videored.data.video_dataset as video_dataset
from videored.data import VideoClipDataset, write_video
from videored.engine.builders import unpack_batch
from videored.normalization import model_input, normalize_uint8

MEAN, STD = (0.45, 0.4, 0.5), (0.225, 0.3, 0.25)
KW = dict(num_frames=4, sampling_rate=4, target_fps=30, crop_size=48, train_jitter_scales=(56, 72),
          mean=MEAN, std=STD)


@pytest.fixture
def video_list(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(tmp_path / name, rng.integers(0, 256, (40, 64, 96, 3), dtype=np.uint8), fps=30)
    (tmp_path / "list.csv").write_text("a.mp4 0\nb.mp4 1\nc.mp4 0\n")
    return tmp_path / "list.csv"


def _plain(x_uint8: torch.Tensor) -> torch.Tensor:
    """The definition in float64: (x / 255 - mean) / std per channel of (..., 3, T, H, W)."""
    mean = torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(3, 1, 1, 1)
    return (x_uint8.double() / 255 - mean) / std


@pytest.mark.parametrize("mode,extra", [("train", {"clips_per_video": 1}), ("train", {"clips_per_video": 2}),
                                        ("test", {"num_spatial_crops": 3, "num_temporal_views": 2})])
def test_uint8_items_normalized_in_the_step_equal_float_items(video_list, mode, extra):
    as_float = VideoClipDataset(video_list, mode=mode, output="float", **KW, **extra)
    as_uint8 = VideoClipDataset(video_list, mode=mode, output="uint8", **KW, **extra)
    for ds in (as_float, as_uint8):
        ds.set_epoch_seed(5)  # the same draws for both
    batches = [next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False))) for ds in (as_float, as_uint8)]
    raw = batches[1]["video"]
    assert raw.dtype == torch.uint8 and batches[1]["normalization"].shape == (len(as_uint8), 2, 3)
    x_float, y_float = unpack_batch(batches[0])
    x_step, y_step = unpack_batch(batches[1], "cpu")  # the training / validation step's call
    assert torch.equal(y_float, y_step)
    assert x_step.dtype == torch.float32 and x_step.shape == x_float.shape
    torch.testing.assert_close(x_step, x_float, rtol=0, atol=0)  # one formula, the same bits
    reference = _plain(raw.flatten(0, 1) if raw.dim() == 6 else raw)
    torch.testing.assert_close(x_step.double(), reference, rtol=0, atol=1e-5)  # float rounding


def test_model_input_takes_one_item_and_per_item_normalizations():
    x = torch.randint(0, 256, (2, 3, 2, 4, 4), dtype=torch.uint8)
    norms = torch.tensor([[MEAN, STD], [(0.5,) * 3, (0.5,) * 3]], dtype=torch.float64)  # (B, 2, 3)
    out = model_input({"video": x, "normalization": norms})
    torch.testing.assert_close(out[0].double(), _plain(x[0]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1].double(), x[1].double() / 255 * 2 - 1, rtol=0, atol=1e-5)
    one = model_input({"video": x[0], "normalization": norms[0]})  # an item, not a batch
    torch.testing.assert_close(one, out[0], rtol=0, atol=0)
    assert torch.equal(normalize_uint8(x[0], MEAN, STD), out[0])
    with pytest.raises(ValueError, match="normalization"):
        model_input({"video": x})
    f = torch.rand(1, 3, 2, 4, 4)
    assert model_input({"video": f}) is f  # float input passes through


def test_test_mode_resizes_once_for_the_three_crops(video_list, monkeypatch):
    calls = []
    real = video_dataset.T.short_side_resize
    monkeypatch.setattr(video_dataset.T, "short_side_resize", lambda v, s: calls.append(s) or real(v, s))
    ds = VideoClipDataset(video_list, mode="test", num_spatial_crops=3, num_temporal_views=2,
                          output="uint8", **KW)
    items = [ds[i] for i in range(6)]  # video a: 2 views x 3 crops
    assert len(calls) == 2  # one resize per temporal view
    # the crops are the left / centre / right of one resized view
    full = real(torch.from_numpy(np.ascontiguousarray(ds._cache[1][0])).permute(3, 0, 1, 2), 48)
    for c, left in enumerate((0, (full.shape[-1] - 48) // 2, full.shape[-1] - 48)):
        assert torch.equal(items[c]["video"], full[..., :, left:left + 48]), c


def test_build_dataset_gives_uint8_and_the_trainer_step_normalizes(synth_root):
    from videored.engine.config import load_config
    from videored.engine.builders import build_dataset

    cfg = load_config(None, [f"data.root={synth_root}", "data.mean=[0.45,0.45,0.45]",
                             "data.std=[0.225,0.225,0.225]", "model.num_frames=4", "model.img_size=32",
                             "data.sampling_rate=4", "data.train_jitter_scales=[32,40]"])
    ds = build_dataset(cfg, "train")
    item = ds[0]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (3, 4, 32, 32)
    random.seed(0)
    x, _ = unpack_batch(next(iter(DataLoader(ds, batch_size=2))), "cpu")
    assert x.dtype == torch.float32 and -2.1 < x.min() and x.max() < 2.5  # (0-0.45)/0.225 .. (1-0.45)/0.225
