"""`videored data synth` and `videored data bench` from the command line."""
import json

import pytest

from videored.cli import main as cli_main
from videored.data import VideoClipDataset
from videored.data.decode_bench import format_table, run_decode_benchmark


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


@pytest.mark.slow
def test_decode_benchmark_rows(tmp_path, capsys):
    rows = run_decode_benchmark(tmp_path / "bench", clips=2, rounds=1)
    assert [(r["video"].split(",")[0], r["backend"]) for r in rows] == [
        ("synthetic 88x80", "decord"), ("synthetic 88x80", "pyav"),
        ("H.264 340x256", "decord"), ("H.264 340x256", "pyav"),
    ]
    for r in rows:
        assert r["decode_clips_per_s"] > 0 and r["item_clips_per_s"] > 0
        assert r["ms_per_clip_decode"] == pytest.approx(1000 / r["decode_clips_per_s"], rel=0.06)
    table = format_table(rows)
    assert table.count("\n") == 5 and "| H.264 340x256, 10 s, 30 fps | pyav |" in table
