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
    from videored.data.decoding import backend_available

    loaders = (["today"] if backend_available("decord") else []) + ["pyav"]  # today's: when decord is there
    assert [(r["video"], r["loader"], r["clips_per_video"]) for r in rows] == [
        ("mine.csv (2 videos)", lb, k) for lb in loaders for k in (1, 2)]
    for row in rows:
        assert row["item_clips_per_cpu_s"] > 0 and row["output"] == ("float" if row["loader"] == "today" else "uint8")
        for model, cores in row["cores_per_gpu"].items():  # model clips/s / one worker's clips per CPU-second
            # item_clips_per_cpu_s is rounded to 0.1, cores to 0.1
            assert cores == pytest.approx(float(model) / row["item_clips_per_cpu_s"], rel=0.02, abs=0.051)
    if "today" in loaders:
        assert rows[0]["vs_today"] == 1.0
        # the ratio of the unrounded CPU times (rates are rounded to 0.1)
        assert rows[-1]["vs_today"] == pytest.approx(rows[-1]["item_clips_per_cpu_s"] / rows[0]["item_clips_per_cpu_s"],
                                                     rel=0.05)
    assert "cores/GPU at 40 clips/s" in capsys.readouterr().out


def test_bench_missing_list_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "bench", "--csv", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
