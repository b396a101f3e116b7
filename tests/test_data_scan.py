"""`data scan`: every bad kind reported by line, hangs and crashes contained by worker processes."""
import json
import os
import signal
import time

import numpy as np
import pytest

from videored.cli import main as cli_main
from videored.data import scan as scan_mod
from videored.data import write_video
from videored.data.scan import ClipSpec, Problems, check_video, check_videos, scan_video_list


@pytest.fixture
def listing(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (30, 32, 96, 3), dtype=np.uint8)
    write_video(tmp_path / "good.mp4", frames, fps=30)
    write_video(tmp_path / "fs.mp4", frames, fps=30, faststart=True)
    write_video(tmp_path / "two.mp4", frames[:2], fps=30)
    (tmp_path / "zero.mp4").write_bytes(b"")
    data = (tmp_path / "fs.mp4").read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) * 2 // 3])  # index intact, tail gone
    (tmp_path / "text.mp4").write_text("not a video\n" * 40)
    (tmp_path / "list.csv").write_text(
        "good.mp4 0\nzero.mp4 0\ntrunc.mp4 0\ntext.mp4 0\nmissing.mp4 0\ntwo.mp4 0\ngood.mp4\n\ngood.mp4 1\n"
    )
    return tmp_path / "list.csv"


def test_scan_reports_each_bad_kind_by_line(listing):
    report = scan_video_list(listing, workers=2, timeout=30)
    assert report["checked"] == 8  # non-blank lines
    by_line = {b["line"]: b for b in report["bad"]}
    assert sorted(by_line) == [2, 3, 4, 5, 7]  # the 2-frame video decodes: fine by default
    assert by_line[2]["reason"] == "empty file (0 bytes)"
    assert "decode failed" in by_line[3]["reason"] or "cannot open" in by_line[3]["reason"]
    assert by_line[4]["reason"].startswith("cannot open")
    assert by_line[5]["reason"] == "missing file"
    assert by_line[7] == {"path": "good.mp4", "line": 7, "reason": "malformed line: expected '<path> <label>', found one field"}
    assert by_line[2]["path"] == str(listing.parent.resolve() / "zero.mp4")


def test_scan_min_frames_and_pyav_full_decode(listing):
    report = scan_video_list(listing, backend="pyav", workers=1, timeout=30, min_frames=8)
    by_line = {b["line"]: b["reason"] for b in report["bad"]}
    assert 6 not in by_line  # short, not broken: reported separately
    assert report["too_short"] == [{"path": str(listing.parent.resolve() / "two.mp4"), "line": 6,
                                    "reason": "only 2 frames (< 8)"}]
    # PyAV opens the truncated file (index in front) and fails while decoding the tail
    assert "decode failed" in by_line[3] or "stream ends" in by_line[3]
    assert check_video(str(listing.parent / "good.mp4"), "pyav") is None
    assert check_video(str(listing.parent / "good.mp4"), "auto", sample_frames=4) is None


def _fake_check(path, backend="decord", min_frames=1, sample_frames=None, clip=None):
    """Stands in for the decoder inside forked workers: hangs or crashes on request."""
    name = os.path.basename(path)
    if name == "hang.mp4":
        time.sleep(60)
    if name == "crash.mp4":
        os.kill(os.getpid(), signal.SIGKILL)  # like an OOM kill; SIGSEGV would print a faulthandler dump
    return Problems() if name.startswith("ok") else Problems(decode="bad")


def test_hung_and_crashing_decoders_cost_one_worker(monkeypatch):
    monkeypatch.setattr(scan_mod, "check_video_problems", _fake_check)  # inherited by forked workers
    tasks = [(1, "ok1.mp4"), (2, "hang.mp4"), (3, "ok2.mp4"), (4, "crash.mp4"), (5, "x.mp4"), (6, "ok3.mp4")]
    start = time.monotonic()
    results = check_videos(tasks, workers=2, timeout=1.5, quiet=True)
    assert time.monotonic() - start < 20
    reasons = {task: p.reason() for task, p in results.items()}
    assert reasons[(1, "ok1.mp4")] is None and reasons[(3, "ok2.mp4")] is None and reasons[(6, "ok3.mp4")] is None
    assert reasons[(2, "hang.mp4")].startswith("timeout: no result after 1.5 s")
    assert "crashed" in reasons[(4, "crash.mp4")] and "-9" in reasons[(4, "crash.mp4")]
    assert reasons[(5, "x.mp4")] == "bad"


def test_cli_scan_exit_codes_and_json(listing, tmp_path, capsys):
    out = tmp_path / "bad.json"
    rc = cli_main(["data", "scan", "--csv", str(listing), "--out", str(out), "--workers", "2"])
    assert rc == 1
    report = json.loads(out.read_text())
    assert set(report) == {"checked", "bad", "too_short"} and len(report["bad"]) == 5
    assert all(set(b) == {"path", "line", "reason"} for b in report["bad"])
    clean = tmp_path / "clean.csv"
    clean.write_text("good.mp4 0\ntwo.mp4 1\n")
    rc = cli_main(["data", "scan", "--csv", str(clean), "--out", str(tmp_path / "ok.json"), "--workers", "1"])
    assert rc == 0 and json.loads((tmp_path / "ok.json").read_text()) == {"checked": 2, "bad": [], "too_short": []}


def test_scan_with_a_config_reports_too_short_apart_from_decode_errors(listing, tmp_path, capsys):
    """model.num_frames 4 x data.sampling_rate 8 at 30 fps: one clip spans 32 frames of these
    30 fps videos, so the 30-frame ones are too short; the truncated one (index claims 30 frames,
    the tail is gone) is both, decode error first."""
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{num_frames: 4}}\ndata: {{root: {listing.parent}, sampling_rate: 8, target_fps: 30}}\n")
    (listing.parent / "train.csv").write_text(listing.read_text())
    out = tmp_path / "r.json"
    rc = cli_main(["data", "scan", "--config", str(config), "--out", str(out), "--workers", "2",
                   "--backend", "pyav"])
    assert rc == 1
    report = json.loads(out.read_text())
    short = {r["line"]: r["reason"] for r in report["too_short"]}
    assert sorted(short) == [1, 3, 6, 9]  # good (twice), truncated, two-frame; not the unopenable ones
    assert short[1] == "30 frames at 30 fps, one clip (4 x 8 frames at 30 fps) needs 32"
    assert short[6] == "2 frames at 30 fps, one clip (4 x 8 frames at 30 fps) needs 32"
    bad = {r["line"]: r["reason"] for r in report["bad"]}
    assert sorted(bad) == [2, 3, 4, 5, 7]
    decode, _, rest = bad[3].partition("; too short: ")
    assert decode.startswith("decode failed at frame ") and rest == short[3]
    assert "too short" not in bad[2]  # empty file: nothing known about its length
    printed = capsys.readouterr()
    assert "bad 5, too short 4 (one clip: 4 x 8 frames at 30 fps)" in printed.out
    assert f"{listing.parent / 'train.csv'}:6: too short: " in printed.err


def test_clip_length_follows_each_video_fps(tmp_path):
    """The same clip (8 x 4 frames at 30 fps = 1.07 s) needs 32 frames at 30 fps, 16 at 15 fps."""
    frames = np.zeros((20, 32, 96, 3), dtype=np.uint8)
    write_video(tmp_path / "fps15.mp4", frames, fps=15)
    write_video(tmp_path / "fps30.mp4", frames, fps=30)
    clip = ClipSpec(8, 4, 30)
    assert check_video(str(tmp_path / "fps15.mp4"), "pyav", clip=clip) is None  # 20 >= 16
    assert check_video(str(tmp_path / "fps30.mp4"), "pyav", clip=clip) == \
        "too short: 20 frames at 30 fps, one clip (8 x 4 frames at 30 fps) needs 32"
