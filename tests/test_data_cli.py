"""`videored data synth` and `videored data bench` from the command line."""
import json

import pytest

from videored.cli import main as cli_main
from videored.data import VideoClipDataset
from videored.bench.decode import cores_per_gpu, format_table, loaders, run_decode_benchmark


def test_cli_synth_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = cli_main(["data", "synth", "--out", str(out), "--classes", "3", "--videos-per-class", "2",
                   "--val-per-class", "1", "--test-per-class", "1", "--seed", "5", "--task", "direction"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["videos"] == {"train": 6, "val": 3, "test": 3} and summary["num_classes"] == 3
    assert 0.05 <= summary["object_fraction_mean"] <= 0.15
    ds = VideoClipDataset(out / "test.csv", mode="test", num_frames=8, sampling_rate=7, crop_size=64,
                          num_spatial_crops=3, return_masks=True)
    assert ds.num_classes == 3 and ds.class_names == ["right", "angle_120", "angle_240"] and len(ds) == 9
    item = ds[4]
    assert item["video"].shape == (3, 8, 64, 64) and item["mask"].any() and not item["failed"]
    with pytest.raises(SystemExit):
        cli_main(["data", "synth", "--out", str(out), "--task", "shape"])


def test_cli_synth_colour_task(tmp_path):
    out = tmp_path / "c"
    assert cli_main(["data", "synth", "--out", str(out), "--task", "colour", "--classes", "2",
                     "--videos-per-class", "1", "--val-per-class", "1", "--test-per-class", "1"]) == 0
    assert (out / "classes.txt").read_text().splitlines() == ["red", "green"]
    assert json.loads((out / "dataset.json").read_text())["hflip_preserves_label"] is True


def test_cli_synth_no_object_class(tmp_path):
    """The no_object class is the last label; the colour classes' videos are the same bytes as
    without it (same per-video random streams), the no_object videos have empty masks and no
    saturated pixels (nothing in them shows a colour class)."""
    common = ["--task", "colour", "--classes", "2", "--videos-per-class", "1", "--val-per-class", "1",
              "--test-per-class", "1", "--seed", "2"]
    with_none, without = tmp_path / "with", tmp_path / "without"
    assert cli_main(["data", "synth", "--out", str(with_none), "--no-object-class", *common]) == 0
    assert cli_main(["data", "synth", "--out", str(without), *common]) == 0
    assert (with_none / "classes.txt").read_text().splitlines() == ["red", "green", "no_object"]
    info = json.loads((with_none / "dataset.json").read_text())
    assert info["num_classes"] == 3 and info["no_object_class"] is True
    assert info["videos"] == {"train": 3, "val": 3, "test": 3}
    assert (with_none / "val.csv").read_text().splitlines()[-1] == "videos/val/val_c02_0000.mp4 2"
    rel = "videos/train/train_c01_0000.mp4"
    assert (with_none / rel).read_bytes() == (without / rel).read_bytes()
    ds = VideoClipDataset(with_none / "test.csv", mode="test", num_frames=8, sampling_rate=7,
                          crop_size=64, num_spatial_crops=1, return_masks=True)
    assert ds.num_classes == 3
    colour, empty = ds[1], ds[2]  # green, no_object
    assert colour["mask"].any() and not empty["mask"].any()

    def max_saturation(video):  # (C, T, H, W) normalized -> max over pixels of max - min channel
        return float((video.amax(0) - video.amin(0)).max())
    assert max_saturation(empty["video"]) < 0.6 * max_saturation(colour["video"])


def test_decode_benchmark_rows(tmp_path):
    import numpy as np

    from videored.data import write_video

    rng = np.random.default_rng(0)
    write_video(tmp_path / "v.mp4", rng.integers(0, 256, (40, 96, 128, 3), dtype=np.uint8), fps=30)
    (tmp_path / "list.csv").write_text("v.mp4 0\n")
    kinds = {"tiny": {"csv": tmp_path / "list.csv", "sampling": dict(
        num_frames=4, sampling_rate=4, target_fps=30, crop_size=64, train_jitter_scales=(80, 96))}}
    rows = run_decode_benchmark(kinds=kinds, clips=2, rounds=1, clips_per_video=(1, 2),
                                model_clips_per_s=(81,))
    labels = [label for label, _, _ in loaders(("decord", "pyav", "torchcodec"))]
    assert [(r["loader"], r["clips_per_video"]) for r in rows] == [(lb, k) for lb in labels for k in (1, 2)]
    for r in rows:
        assert r["item_clips_per_cpu_s"] > 0 and r["decode_clips_per_cpu_s"] > 0
        assert r["ms_cpu_per_item_clip"] == pytest.approx(1000 / r["item_clips_per_cpu_s"], rel=0.06)
        assert r["cores_per_gpu"]["81"] == pytest.approx(81 / r["item_clips_per_cpu_s"], rel=0.06, abs=0.051)  # both rounded
        assert (r["vs_today"] is not None) == ("today" in labels)
    today = [r for r in rows if r["loader"] == "today"]
    if today:
        assert today[0]["vs_today"] == 1.0 and today[0]["output"] == "float"
    assert cores_per_gpu(10.0, 81.0) == pytest.approx(8.1)
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "cores/GPU at 81 clips/s" in table
