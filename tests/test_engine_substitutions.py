"""Training over a list with bad videos: every substitution reaches summary.json, metrics.jsonl and
the end-of-run line; a bad fraction over data.max_bad_fraction stops the run; a hung worker stops
it with the batch's videos named; workers may be spawned."""
import json
import re
import time

import numpy as np
import pytest
import torch

from _engine_utils import run_cli, tiny_config
from _video_faults import write_corrupted_video
from videored.data import VideoClipDataset, write_video
from videored.engine.metrics_log import read_metrics
from videored.engine.substitutions import TooManyBadVideosError
from videored.engine.trainer import train


@pytest.fixture
def bad_list(tmp_path):
    """8 lines: 5 good videos, one corrupted (frames break from packet 2), one missing, one empty."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for i in range(5):
        write_video(folder / f"good{i}.mp4", rng.integers(0, 256, (24, 48, 96, 3), dtype=np.uint8), fps=30)
        lines.append(f"good{i}.mp4 {i % 4}")
    write_corrupted_video(folder / "corrupted.mp4", rng.integers(0, 256, (24, 48, 96, 3), dtype=np.uint8),
                          first_bad_packet=2)
    (folder / "empty.mp4").write_bytes(b"")
    lines[1:1] = ["corrupted.mp4 1"]
    lines[4:4] = ["missing.mp4 2", "empty.mp4 3"]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder


VIDEO = ["data.kind=video", "data.sampling_rate=8", "data.train_jitter_scales=[32, 40]",
         "data.batch_size=4", "schedule.stages=[finetune]", "schedule.finetune_epochs=2"]


def _bad_paths(folder):
    return sorted(str(folder.resolve() / n) for n in ("corrupted.mp4", "empty.mp4", "missing.mp4"))


@pytest.mark.decord
def test_training_reports_exactly_the_substituted_videos(bad_list, tmp_path):
    # 8 listed, batch 4, drop_last: each epoch loads all 8 items, 3 of them bad
    out = tmp_path / "run"
    config = tmp_path / "exp.yaml"
    from videored.engine.config import save_config

    save_config(tiny_config(f"data.root={bad_list}", *VIDEO, "data.max_bad_fraction=0.5",
                            "data.decoder=decord"), config)  # its PyAV fallback is reported too
    res = run_cli(["train", "--config", str(config), "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]

    subs = json.loads((out / "summary.json").read_text())["substitutions"]
    bad = _bad_paths(bad_list)
    assert subs["substituted"] == 6 and subs["items"] == 16
    assert sorted(subs["bad_videos"]) == bad
    reasons = subs["bad_videos"]
    assert reasons[bad[1]] == "empty file (0 bytes)" and reasons[bad[2]] == "missing file"
    # decord fails, then PyAV: both messages, each with the frame where decoding broke
    assert "(decord)" in reasons[bad[0]] and "(pyav)" in reasons[bad[0]], reasons[bad[0]]
    assert "Invalid data found when processing input" in reasons[bad[0]], reasons[bad[0]]
    assert "decode failed at frame" in reasons[bad[0]], reasons[bad[0]]
    assert [(e["epoch"], e["items"], e["substituted"], sorted(e["bad_videos"])) for e in subs["epochs"]] == \
        [(0, 8, 3, bad), (1, 8, 3, bad)]

    rows = read_metrics(out / "metrics.jsonl")
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [(r["items"], r["substituted"], sorted(r["bad_videos"])) for r in epochs] == [(8, 3, bad)] * 2
    steps = [r for r in rows if r["kind"] == "step"]  # log_every 2 = once per epoch, at its end
    assert [r["substituted"] for r in steps] == [3, 3]
    assert "substituted items (bad videos): 6 of 16 training items; 3 bad videos:" in res.stdout
    assert all(p in res.stdout for p in bad)


def test_killed_and_resumed_run_counts_the_same_substitutions(bad_list, tmp_path):
    """The epoch's running counts live in the checkpoints: a run killed mid-epoch (step 3 of 4,
    checkpoint at step 2) and resumed reports what the uninterrupted run reports."""
    from videored.engine.config import save_config

    config = tmp_path / "exp.yaml"
    save_config(tiny_config(f"data.root={bad_list}", *VIDEO, "data.max_bad_fraction=0.5",
                            "run.ckpt_every_steps=1"), config)
    runs = {}
    for name, extra in (("ref", []), ("run", ["debug.kill_after_steps=3"])):
        res = run_cli(["train", "--config", str(config), "--out", str(tmp_path / name), *extra])
        assert res.returncode == (17 if extra else 0), res.stderr[-3000:]
    res = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--resume", "auto"])
    assert res.returncode == 0 and "resuming from" in res.stdout, res.stderr[-3000:]
    for name in ("ref", "run"):
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert runs["run"]["substitutions"] == runs["ref"]["substitutions"]
    assert runs["run"]["substitutions"]["substituted"] == 6
    assert runs["run"] == runs["ref"]


def test_bad_fraction_over_the_limit_stops_with_a_clear_error(bad_list, tmp_path):
    cfg = tiny_config(f"data.root={bad_list}", *VIDEO, "run.log_every=1")  # default limit 0.05
    with pytest.raises(TooManyBadVideosError) as err:
        train(cfg, tmp_path / "run")
    message = str(err.value)
    assert "data.max_bad_fraction=0.05" in message and "videored data scan" in message
    # stopped at the first log window (step 1 of 2): the epoch can no longer stay under 5 %
    assert re.search(r"stage finetune0 epoch 0: [1-3] of the [48] training items loaded so far", message), message
    named = [p for p in _bad_paths(bad_list) if p in message]
    assert named, message  # the videos met so far are named, with their reasons
    assert not (tmp_path / "run" / "model.pt").exists()


class _HangsOn(VideoClipDataset):
    """Stands in for a decoder hang (decord's issues #373, #197) on one video."""

    def _read(self, path, *args):
        if path.endswith("good3.mp4"):
            time.sleep(120)
        return super()._read(path, *args)


def test_a_hung_worker_stops_training_naming_the_videos(bad_list, tmp_path):
    (bad_list / "train.csv").write_text("".join(f"good{i}.mp4 0\n" for i in range(4)))  # one batch: all 4
    cfg = tiny_config(f"data.root={bad_list}", *VIDEO, "data.num_workers=1", "data.loader_timeout=3",
                      "schedule.finetune_epochs=1")
    ds = _HangsOn(bad_list / "train.csv", mode="train", num_frames=2, sampling_rate=8, crop_size=32,
                  train_jitter_scales=(32, 40))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"data\.loader_timeout") as err:
        train(cfg, tmp_path / "run", train_set=ds)
    assert time.monotonic() - start < 60
    assert str(bad_list.resolve() / "good3.mp4") in str(err.value)


def test_evaluation_loaders_take_the_same_worker_settings(bad_list):
    """Validation and eval read data.loader_timeout and the start method too: a hung decoder
    raises after the timeout instead of stalling the job."""
    from videored.engine.builders import build_model, loader_workers
    from videored.engine.distributed import DistInfo
    from videored.engine.evaluation import predict_views

    (bad_list / "test.csv").write_text("good0.mp4 0\ngood3.mp4 0\n")
    cfg = tiny_config(f"data.root={bad_list}", *VIDEO, "data.num_workers=1", "data.loader_timeout=3",
                      "data.multiprocessing_context=spawn")
    workers = loader_workers(cfg)
    assert workers == {"num_workers": 1, "timeout": 3.0, "multiprocessing_context": "spawn"}
    assert loader_workers(cfg, 0) == {"num_workers": 0}  # no timeout without workers: it would not apply
    ds = _HangsOn(bad_list / "test.csv", mode="test", num_frames=2, sampling_rate=8, crop_size=32,
                  num_spatial_crops=1, mean=(0.45,) * 3, std=(0.225,) * 3)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out"):
        predict_views(build_model(cfg).eval(), ds, dist=DistInfo(0, 1, 0, torch.device("cpu")), batch_size=1,
                      workers=workers)
    assert time.monotonic() - start < 60


def test_spawned_workers_train(bad_list, tmp_path):
    cfg = tiny_config(f"data.root={bad_list}", *VIDEO, "data.num_workers=1", "schedule.finetune_epochs=1",
                      "data.multiprocessing_context=spawn", "data.max_bad_fraction=0.5")
    result = train(cfg, tmp_path / "run")
    assert result["global_steps"] == 2
    assert result["substitutions"]["substituted"] == 3 and result["substitutions"]["items"] == 8
