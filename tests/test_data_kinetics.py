"""Kinetics-400 preparation: annotation CSVs + clip folders -> lists; PyAV short-side re-encode."""
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from videored.cli import main as cli_main
from videored.data import iter_video_list, open_video, reencode_short_side, write_video
from videored.data import transforms as T
from videored.data.kinetics import clip_name, make_kinetics_lists, read_annotations, resize_videos

REPO = Path(__file__).resolve().parents[1]
HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"


@pytest.fixture
def k400(tmp_path):
    """CVDF-like layout: flat train/ and val/ folders, per-class folders elsewhere, a replacement."""
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "train.csv").write_text(
        HEADER
        + "air drumming,aaa,1,11,train,0\n"      # line 2: file in a per-class folder with a space
        + "abseiling,bbb,20,30,train,0\n"        # line 3: flat; corrupted, replaced later
        + "zumba,ccc,0,10,train,0\n"             # line 4: missing
        + "abseiling,ddd,oops,10,train,0\n"      # line 5: malformed time
        + "zumba,eee,5,15,train,0\n"             # line 6
    )
    (ann / "val.csv").write_text(HEADER + "zumba,fff,3,13,val,0\nabseiling,ggg,0,10,val,0\nnew class,hhh,0,10,val,0\n")
    train = tmp_path / "k400" / "train"
    (train / "air drumming").mkdir(parents=True)
    (train / "air drumming" / "aaa_000001_000011.mp4").write_bytes(b"x")
    (train / "bbb_000020_000030.mp4").write_bytes(b"corrupt")
    (train / "eee_000005_000015.mp4").write_bytes(b"x")
    (train / ".eee_000005_000015.partial1.mp4").write_bytes(b"")  # an unfinished re-encode: ignored
    (train / "notes.txt").write_text("not a clip")
    val = tmp_path / "k400" / "val"
    val.mkdir()
    (val / "fff_000003_000013.mp4").write_bytes(b"x")
    (val / "ggg_000000_000010.mkv").write_bytes(b"x")
    repl = tmp_path / "k400" / "replacement"
    repl.mkdir()
    (repl / "bbb_000020_000030.mp4").write_bytes(b"fixed")
    return tmp_path


def test_clip_name_and_annotation_errors(k400):
    assert clip_name("-abc_d", 84, 94) == "-abc_d_000084_000094"
    rows, errors = read_annotations(k400 / "annotations" / "train.csv")
    assert [a.clip_name for a in rows] == ["aaa_000001_000011", "bbb_000020_000030", "ccc_000000_000010", "eee_000005_000015"]
    assert len(errors) == 1 and errors[0].endswith("train.csv:5: could not convert string to float: 'oops'")
    bad = k400 / "bad.csv"
    bad.write_text("youtube_id,time_start\nx,1\n")
    with pytest.raises(ValueError, match="header lacks"):
        read_annotations(bad)


def test_lists_classes_missing_and_replacement(k400):
    out = k400 / "lists"
    roots = [k400 / "k400" / "train", k400 / "k400" / "val", k400 / "k400" / "replacement"]
    report = make_kinetics_lists(roots, out, k400 / "annotations" / "train.csv", k400 / "annotations" / "val.csv")
    assert (out / "classes.txt").read_text().splitlines() == ["abseiling", "air drumming", "zumba"]
    train = [(Path(r.path), r.label) for r in iter_video_list(out / "train.csv")]
    assert train == [
        ((k400 / "k400/train/air drumming/aaa_000001_000011.mp4").resolve(), 1),
        ((k400 / "k400/replacement/bbb_000020_000030.mp4").resolve(), 0),  # the later root wins
        ((k400 / "k400/train/eee_000005_000015.mp4").resolve(), 2),
    ]
    assert (out / "missing_train.txt").read_text() == "ccc_000000_000010\n"
    s = report["splits"]
    assert (s["train"]["annotated"], s["train"]["listed"], s["train"]["missing"]) == (5, 3, 1)
    assert len(s["train"]["bad_annotation_lines"]) == 1
    # val: a label unseen in train is reported, not given a new index
    assert (s["val"]["listed"], s["val"]["missing"]) == (2, 0)
    assert "label 'new class' not in classes" in s["val"]["bad_annotation_lines"][0]
    # no test annotations: test.csv = the validation clips (the papers' protocol)
    assert (out / "test.csv").read_text() == (out / "val.csv").read_text()
    assert json.loads((out / "report.json").read_text())["test_from"] == "validation annotations"


def test_cli_and_thin_script(k400, capsys, monkeypatch):
    out = k400 / "cli_lists"
    rc = cli_main(["data", "k400", "lists", "--annotations", str(k400 / "annotations"),
                   "--videos", str(k400 / "k400"), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train: 3 listed, 1 of 5 annotated clips missing, 1 bad annotation lines" in printed
    # one root with a duplicate name (train/bbb and replacement/bbb): the first in sorted order
    assert len((out / "train.csv").read_text().splitlines()) == 3
    assert json.loads((out / "report.json").read_text())["duplicate_files_ignored"] == 1
    rc = cli_main(["data", "k400", "lists", "--annotations", str(k400), "--videos", str(k400), "--out", str(out)])
    assert rc == 2 and "lacks train.csv" in capsys.readouterr().err
    # the datasets/ script is a thin wrapper of the same command
    out2 = k400 / "script_lists"
    monkeypatch.setattr(sys, "argv", ["make_lists.py", "--annotations", str(k400 / "annotations"),
                                      "--videos", str(k400 / "k400"), "--out", str(out2)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "datasets/kinetics400/make_lists.py"), run_name="__main__")
    assert done.value.code == 0
    assert (out2 / "train.csv").read_text() == (out / "train.csv").read_text()


def _smooth_frames(t, h, w):
    """Grey, smooth, moving pattern: lossy 4:2:0 H.264 keeps it well (colour detail would not)."""
    yy, xx = np.mgrid[0:h, 0:w]
    grey = [128 + 60 * np.sin(xx / 9 + k / 5) + 40 * np.cos(yy / 7) for k in range(t)]
    return np.repeat(np.clip(np.stack(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def test_reencode_short_side_matches_a_direct_resize(tmp_path):
    frames = _smooth_frames(20, 96, 144)  # landscape 144x96 -> short side 64: 96x64
    write_video(tmp_path / "src.mp4", frames, fps=25)
    assert reencode_short_side(tmp_path / "src.mp4", tmp_path / "out" / "dst.mp4", 64) == (64, 96)
    with open_video(tmp_path / "out" / "dst.mp4", "auto") as v:
        assert (v.num_frames, v.fps) == (20, 25.0)
        small = v.get_frames(range(20))
    assert small.shape == (20, 64, 96, 3)
    with open_video(tmp_path / "src.mp4", "auto") as v:
        source = v.get_frames(range(20))
    reference = (T.short_side_resize(T.to_float_cthw(source), 64).permute(1, 2, 3, 0) * 255).numpy()  # (T, H, W, 3)
    err = np.abs(small[:, None].astype(np.float64) - reference[None]).mean(axis=(2, 3, 4))  # (20, 20)
    assert err.argmin(axis=1).tolist() == list(range(20))  # every frame kept, in order
    assert err.diagonal().max() < 4.0  # area vs antialiased bilinear + one more lossy encode
    # portrait with an odd resized long side is rounded to an even size (yuv420p)
    write_video(tmp_path / "tall.mp4", _smooth_frames(4, 100, 64), fps=30)
    assert reencode_short_side(tmp_path / "tall.mp4", tmp_path / "tall_small.mp4", 32) == (50, 32)
    assert not list(tmp_path.glob("**/.*partial*"))


def test_resize_folder_is_resumable(tmp_path):
    src = tmp_path / "src"
    (src / "class a").mkdir(parents=True)
    write_video(src / "class a" / "v1_000000_000010.mp4", _smooth_frames(6, 64, 80), fps=30)
    write_video(src / "v2_000000_000010.mp4", _smooth_frames(6, 64, 80), fps=30)
    (src / "broken_000000_000010.mp4").write_bytes(b"garbage" * 10)
    dst = tmp_path / "dst"
    first = resize_videos(src, dst, short_side=32, workers=2, progress=False)
    assert first == {"found": 3, "already_done": 0, "resized": 2, "failed": 1}
    assert (dst / "class a" / "v1_000000_000010.mp4").is_file()
    assert "broken_000000_000010.mp4" in (dst / "resize_failures.txt").read_text()
    second = resize_videos(src, dst, short_side=32, workers=2, progress=False)
    assert second == {"found": 3, "already_done": 2, "resized": 0, "failed": 1}
    with open_video(dst / "v2_000000_000010.mp4", "pyav") as v:
        assert v.get_frames([0]).shape == (1, 32, 40, 3)
