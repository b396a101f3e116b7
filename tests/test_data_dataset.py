"""VideoClipDataset: item contract, bad videos in train (substitute) and val/test (failed), csv lines."""
import copy
import logging
import pickle

import numpy as np
import pytest
import torch

from videored.data import VideoClipDataset, iter_video_list, write_video


def _solid_video(path, value, t=40, h=32, w=96, fps=30, lossless=True):
    """Every pixel of every frame = value (per channel), so a decoded item shows whose it is."""
    frames = np.full((t, h, w, 3), value, dtype=np.uint8)
    write_video(path, frames, fps=fps, lossless=lossless)


@pytest.fixture
def bad_kinds(tmp_path):
    """A list with two good videos and every bad kind, and the line number of each."""
    _solid_video(tmp_path / "good_a.mp4", 200)
    _solid_video(tmp_path / "good_b.mp4", 100)
    two = np.zeros((2, 32, 96, 3), dtype=np.uint8)
    two[1] = 50
    write_video(tmp_path / "two.mp4", two, fps=30, lossless=True)
    (tmp_path / "zero.mp4").write_bytes(b"")
    good = (tmp_path / "good_a.mp4").read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.mp4").write_text("definitely not a video\n" * 50)
    lines = [
        "good_a.mp4 0",     # 1
        "zero.mp4 1",       # 2
        "trunc.mp4 1",      # 3
        "",                 # 4 blank: ignored
        "text.mp4 1",       # 5
        "missing.mp4 1",    # 6
        "two.mp4 2",        # 7
        "good_b.mp4",       # 8 malformed: no label
        "good_b.mp4 x",     # 9 malformed: label not an integer
        "good_b.mp4 1",     # 10
    ]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.csv"


KW = dict(num_frames=4, sampling_rate=8, target_fps=30, crop_size=32, train_jitter_scales=(32, 40),
          mean=(0, 0, 0), std=(1, 1, 1))


def test_csv_rows_relative_paths_spaces_and_malformed(tmp_path):
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "list.csv").write_text(
        "sub dir/air drumming.mp4 3\n\n/abs/path.mp4 0\nonlyonefield\nx.mp4 -1\nx.mp4 7\ny.mp4 1.5\n"
    )
    rows = list(iter_video_list(tmp_path / "list.csv", num_classes=5))
    assert [(r.line, r.error is None) for r in rows] == [(1, True), (3, True), (4, False), (5, False), (6, False), (7, False)]
    assert rows[0].path == str(tmp_path.resolve() / "sub dir" / "air drumming.mp4") and rows[0].label == 3
    assert rows[1].path == "/abs/path.mp4"
    assert "one field" in rows[2].error and "outside" in rows[3].error and "[0, 5)" in rows[4].error
    assert "not an integer" in rows[5].error


def test_train_substitutes_bad_videos_and_counts(bad_kinds, caplog):
    caplog.set_level(logging.WARNING, logger="videored.data.video_dataset")
    ds = VideoClipDataset(bad_kinds, mode="train", **KW)
    # malformed lines 8 and 9 are left out (and counted) in train; the blank line is not a row
    assert ds.malformed == [(8, "expected '<path> <label>', found one field"), (9, "label 'x' is not an integer")]
    assert ds.num_videos == len(ds) == 7
    assert ds.num_classes == 3  # no classes.txt: max label + 1
    bad = {1, 2, 3, 4}  # zero, truncated, text, missing (positions in ds.paths)
    torch.manual_seed(0)
    for i in range(len(ds)):
        item = ds[i]
        assert not item["failed"] and item["video"].shape == (3, 4, 32, 32)
        if i in bad:
            assert item["video_index"] not in bad and item["video_index"] != i  # another, good video
            assert item["bad_path"] == ds.paths[i] and item["bad_reason"]
        else:
            assert item["video_index"] == i and item["bad_path"] == item["bad_reason"] == ""
        # the video is the one named in the item: solid 200 / 100, or the 2-frame one
        value = {0: 200, 5: None, 6: 100}[item["video_index"]]
        if value is not None:
            assert torch.allclose(item["video"], torch.full_like(item["video"], value / 255), atol=1e-6)
            assert item["label"] == {0: 0, 6: 1}[item["video_index"]]
    assert ds.skipped == 4
    # each bad path logged once with its reason, even when hit again
    for _ in range(3):
        ds[1]
    assert ds.skipped == 7
    warnings = [r.getMessage() for r in caplog.records if "bad video" in r.getMessage()]
    assert len(warnings) == 4
    reasons = " | ".join(warnings)
    assert "empty file (0 bytes)" in reasons and "missing file" in reasons
    assert sum("cannot open" in w for w in warnings) == 2  # truncated (no index) and text


def test_two_frame_video_is_sampled_with_clamped_indices(bad_kinds):
    """Span 4 x 8 = 32 frames > 2: indices [0, 1, 1, 1] (frame 0 black, frame 1 = 50)."""
    ds = VideoClipDataset(bad_kinds, mode="test", num_spatial_crops=1, **KW)
    item = ds[ds.paths.index(str(bad_kinds.parent / "two.mp4"))]
    assert not item["failed"]
    per_frame = (item["video"].mean(dim=(0, 2, 3)) * 255).round().tolist()
    assert per_frame == [0.0, 50.0, 50.0, 50.0]


def test_eval_marks_failed_never_substitutes(bad_kinds):
    ds = VideoClipDataset(bad_kinds, mode="test", num_spatial_crops=3, **KW)
    assert ds.num_videos == 9  # malformed lines are kept as failed entries in val/test
    assert len(ds) == 27
    failed = {}
    for i in range(len(ds)):
        item = ds[i]
        assert item["video_index"] == i // 3 and item["spatial_index"] == i % 3  # never another video
        if item["failed"]:
            assert torch.count_nonzero(item["video"]) == 0 and item["video"].shape == (3, 4, 32, 32)
            failed[item["video_index"]] = item["label"]
            assert item["error"] and ".cc:" not in item["error"]  # why, for the eval's failure list
        else:
            assert item["error"] == ""
    # zero, truncated, text, missing keep their labels; the two malformed lines have label -1
    assert failed == {1: 1, 2: 1, 3: 1, 4: 1, 6: -1, 7: -1}


def test_train_gives_up_after_bounded_substitutes(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "list.csv").write_text("a.mp4 0\nmissing.mp4 0\n")
    ds = VideoClipDataset(tmp_path / "list.csv", mode="train", max_substitutes=5, **KW)
    with pytest.raises(RuntimeError, match="6 bad videos in a row"):
        ds[0]


def test_no_usable_rows_is_an_error(tmp_path):
    (tmp_path / "list.csv").write_text("just-a-path\n")
    with pytest.raises(ValueError, match="no usable videos"):
        VideoClipDataset(tmp_path / "list.csv", mode="train", **KW)


def test_classes_file_sets_num_classes_and_bounds_labels(tmp_path):
    _solid_video(tmp_path / "a.mp4", 10, t=8)
    (tmp_path / "classes.txt").write_text("x\ny\nz\n")
    (tmp_path / "list.csv").write_text("a.mp4 2\na.mp4 3\n")
    ds = VideoClipDataset(tmp_path / "list.csv", mode="train", **KW)
    assert ds.num_classes == 3 and ds.class_names == ["x", "y", "z"]
    assert ds.num_videos == 1 and ds.malformed == [(2, "label 3 outside [0, 3)")]


def test_decord_width_bug_falls_back_to_pyav(tmp_path):
    """decord fails on some small widths (e.g. 48 px in yuv420p); PyAV decodes them."""
    _solid_video(tmp_path / "narrow.mp4", 120, t=12, h=32, w=48, lossless=False)
    (tmp_path / "list.csv").write_text("narrow.mp4 0\n")
    pytest.importorskip("decord", reason="decord not installed (no wheels on this platform)")
    ds = VideoClipDataset(tmp_path / "list.csv", mode="test", num_spatial_crops=1, backend="decord", **KW)
    item = ds[0]
    assert not item["failed"]
    assert abs(item["video"].mean().item() * 255 - 120) < 2
    strict = VideoClipDataset(tmp_path / "list.csv", mode="test", num_spatial_crops=1, backend="decord",
                              pyav_fallback=False, **KW)
    assert strict[0]["failed"]


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_items_report_their_substitution_under_every_worker_start_method(bad_kinds, context):
    """The count travels in the batches, so it is exact however the workers were started (a
    fork-context shared counter made spawn/forkserver workers crash at start)."""
    ds = VideoClipDataset(bad_kinds, mode="train", **KW)
    workers = 2 if context == "fork" else 1  # a spawned worker costs seconds (it imports torch)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, num_workers=workers, multiprocessing_context=context)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == 7 and not any(b["failed"].any() for b in batches)
    reported = {p: r for b in batches for p, r in zip(b["bad_path"], b["bad_reason"]) if p}
    folder = bad_kinds.parent.resolve()
    assert sorted(reported) == sorted(str(folder / n) for n in ("zero.mp4", "trunc.mp4", "text.mp4", "missing.mp4"))
    assert reported[str(folder / "zero.mp4")] == "empty file (0 bytes)"
    assert reported[str(folder / "missing.mp4")] == "missing file"
    served = [int(i) for b in batches for i, p in zip(b["video_index"], b["bad_path"]) if p]
    assert len(served) == 4 and not set(served) & {1, 2, 3, 4}  # each replaced by a good video
    assert ds.skipped == 0  # the workers' own counts stay in the workers


def test_dataset_pickles_and_deep_copies(bad_kinds):
    ds = VideoClipDataset(bad_kinds, mode="train", **KW)
    ds[1]
    for clone in (copy.deepcopy(ds), pickle.loads(pickle.dumps(ds))):
        assert clone.skipped == 1 and clone.paths == ds.paths
        clone[2]
        assert clone.skipped == 2 and ds.skipped == 1  # an independent counter


def test_train_flip_off_when_dataset_says_so(tmp_path):
    frames = np.zeros((8, 32, 64, 3), dtype=np.uint8)
    frames[:, :, :32] = 255  # left half white
    write_video(tmp_path / "half.mp4", frames, fps=30, lossless=True)
    (tmp_path / "list.csv").write_text("half.mp4 0\n")
    kw = {**KW, "crop_size": 32, "train_jitter_scales": (32, 32)}
    ds = VideoClipDataset(tmp_path / "list.csv", mode="train", **kw)
    (tmp_path / "dataset.json").write_text('{"hflip_preserves_label": false}')
    no_flip = VideoClipDataset(tmp_path / "list.csv", mode="train", **kw)
    torch.manual_seed(0)
    assert ds.train_flip is True and no_flip.train_flip is False
    # a 32-column crop of "white | black": unflipped, brightness never increases left to right
    for _ in range(20):
        v = no_flip[0]["video"][0, 0]  # (32, 32)
        cols = v.mean(dim=0)
        assert torch.all(cols[1:] <= cols[:-1] + 1e-6)  # non-increasing left to right
    seen_flipped = False
    for _ in range(40):
        cols = ds[0]["video"][0, 0].mean(dim=0)
        seen_flipped |= bool(torch.any(cols[1:] > cols[:-1] + 0.5))
    assert seen_flipped
