"""`videored data bench --csv LIST`: the loader benchmark on a user's own videos."""
from __future__ import annotations

import json

import numpy as np
import pytest

from videored.cli import main
from videored.data.encoding import write_video


def test_bench_on_own_videos_reports_cores_per_gpu(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / name, rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8), fps=30)
    (tmp_path / "mine.csv").write_text("a.mp4 0\nb.mp4 1\n")
    out = tmp_path / "rows.json"
    assert main(["data", "bench", "--csv", str(tmp_path / "mine.csv"), "--clips", "2",
                 "--rounds", "1", "--backends", "pyav", "--model-clips-per-s", "10,40",
                 "--clips-per-video", "1,2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["video"], r["backend"], r["clips_per_video"]) for r in rows] == [
        ("mine.csv (2 videos)", "pyav", 1), ("mine.csv (2 videos)", "pyav", 2)]
    one, two = rows
    assert one["vs_one_clip"] == 1.0
    # per-clip rates, the ratio of the unrounded times (rates are rounded to 0.1)
    assert two["vs_one_clip"] == pytest.approx(two["item_clips_per_s"] / one["item_clips_per_s"], rel=0.05)
    row = rows[0]
    assert row["frames_per_clip"] == 8 and row["item_clips_per_s"] > 0
    for model, cores in row["cores_per_gpu"].items():  # model clips/s / one worker's clips/s
        # item_clips_per_s is rounded to 0.1, cores to 0.01
        assert cores == pytest.approx(float(model) / row["item_clips_per_s"], rel=0.01, abs=0.011)
    assert "cores per GPU at 40 clips/s" in capsys.readouterr().out


def test_bench_missing_list_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "bench", "--csv", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
