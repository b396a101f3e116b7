"""Issue 25: a run is never lost and never starts silently wrong.

Each test is one scenario a cluster user meets (damaged checkpoints under a requeue, a second job
on the same folder, a changed config on resume, `???` values, NaN losses, bad list lines, a full
disk, unreadable files): the expected refusal or one-line error, nothing overwritten, and the
resumes that do run stay bit-identical.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from _engine_utils import REPO, assert_same_weights, random_tensor_file, run_cli, tiny_config, weights
from videored.engine import checkpoint as ckpt
from videored.engine.config import ConfigError, load_config, save_config
from videored.engine.run_folder import LOCK_NAME, RunFolderError, RunLock
from videored.engine.checkpoint import ResumeConfigError
from videored.engine.trainer import NonFiniteLossError, train
from videored.torch_io import UnreadableFileError, load_torch_file


def _cfg(data, *extra):
    return tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                       "schedule.stages=[finetune]", "schedule.finetune_epochs=2", *extra)


def _snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1. --resume auto when checkpoints exist but none loads ----

def test_resume_auto_refuses_when_no_checkpoint_loads_and_fresh_keeps_the_old_files(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    cfg = _cfg(data, "run.ckpt_every_steps=1")
    run = tmp_path / "run"
    train(cfg, run)
    files = ckpt.list_checkpoints(run / "checkpoints")
    assert len(files) == 3
    files[0].write_bytes(files[0].read_bytes()[:300])  # torn
    files[1].write_bytes(b"")  # empty
    torch.save({"something": torch.zeros(2)}, files[2])  # a foreign dict
    before = _snapshot(run)

    with pytest.raises(ckpt.NoUsableCheckpointError) as err:
        train(cfg, run, resume="auto")
    text = str(err.value)
    assert "\n" not in text and "--resume fresh" in text
    for path, why in zip(files, ("truncated or damaged", "empty", "missing keys")):
        assert f"{path}: " in text and why in text
    assert _snapshot(run) == before  # nothing overwritten, not even metrics.jsonl

    # starting over is a choice: the earlier run's files move to replaced/<time>/, intact
    train(cfg, run, resume="fresh")
    moved = list((run / "replaced").iterdir())
    assert len(moved) == 1
    kept = _snapshot(moved[0])
    assert {k: v for k, v in before.items() if k in kept} == kept and "metrics.jsonl" in kept
    assert sorted(k for k in kept if k.startswith("checkpoints")) == sorted(
        f"checkpoints/{p.name}" for p in files)
    assert (run / "model.pt").is_file() and not (run / LOCK_NAME).exists()


def test_cli_one_line_error_when_no_checkpoint_loads(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    config = tmp_path / "exp.yaml"
    save_config(_cfg(data), config)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    bad = run / "checkpoints" / ckpt.checkpoint_name(0, 1, 0)
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    res = run_cli(["train", "--config", str(config), "--out", str(run), "--resume", "auto"])
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and str(bad) in res.stderr
    assert bad.read_bytes() == b"PK\x03\x04 not really a zip" and not (run / "model.pt").exists()


# ---- 2. a folder that holds a run, without --resume ----

def test_folder_holding_a_run_is_refused_without_resume(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    cfg = _cfg(data)
    run = tmp_path / "run"
    train(cfg, run)
    before = _snapshot(run)
    with pytest.raises(RunFolderError, match=r"already holds a run \(checkpoints, model\.pt, "
                                             r"summary\.json, metrics\.jsonl\).*--resume auto"):
        train(cfg, run)
    assert _snapshot(run) == before
    # the folder of a run killed before its first checkpoint holds metrics.jsonl only: refused too
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.jsonl").write_text('{"kind": "step"}\n')
    with pytest.raises(RunFolderError, match="metrics.jsonl"):
        train(cfg, tmp_path / "early")


# ---- 3. two runs on one folder: the run lock ----

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder, age_s=0.0, **owner):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "slurm_job_id": None, "started": "then", **owner}))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_run_lock_refuses_a_live_owner_and_takes_over_stale_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    # live: this very process on this host
    _write_lock(tmp_path / "a")
    with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {os.getpid()} on "):
        RunLock(tmp_path / "a").acquire()
    # another host with a recent heartbeat: may be alive, refused
    _write_lock(tmp_path / "b", host="elsewhere", pid=1, age_s=60)
    with pytest.raises(RunFolderError, match="elsewhere"):
        RunLock(tmp_path / "b").acquire()
    # stale: a dead process here; another host silent for longer than STALE_AFTER_S; an earlier
    # run of this same SLURM job (a requeue keeps the job id)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    cases = {"c": ({"pid": _dead_pid()}, "is gone"),
             "d": ({"host": "elsewhere", "pid": 1, "age_s": 3600}, "no heartbeat for"),
             "e": ({"host": "elsewhere", "pid": 1, "slurm_job_id": "4242"}, "SLURM job 4242")}
    for name, (owner, why) in cases.items():
        _write_lock(tmp_path / name, **owner)
        lock = RunLock(tmp_path / name).acquire()
        assert why in lock.took_over
        held = json.loads((tmp_path / name / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid() and held["slurm_job_id"] == "4242"
        lock.release()
        assert not (tmp_path / name / LOCK_NAME).exists()


def test_second_run_is_refused_while_the_first_runs_and_a_kill_9_leaves_nothing_behind(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    reference = tmp_path / "ref"
    train(_cfg(data, "run.ckpt_every_steps=1"), reference)  # uninterrupted, in this process
    config = tmp_path / "exp.yaml"
    # the first run pauses 60 s in the middle of its first checkpoint write, holding the lock
    save_config(_cfg(data, "run.ckpt_every_steps=1", "debug.pause_write_at=middle",
                     "debug.pause_write_s=60"), config)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "videored.cli", "train", "--config", str(config),
                              "--out", str(run)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "debug_write_paused").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.2)
        second = run_cli(["train", "--config", str(config), "--out", str(run), "--resume", "auto"])
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"in use by another run (pid {first.pid} on {socket.gethostname()}" in second.stderr
    finally:
        first.kill()  # kill -9 inside torch.save: no cleanup runs
        first.communicate(timeout=60)
    tmp = run / "checkpoints" / (ckpt.checkpoint_name(0, 0, 1) + f".tmp.{first.pid}")
    assert tmp.stat().st_size > 0 and ckpt.list_checkpoints(run / "checkpoints") == []
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == first.pid

    # the requeue: the dead owner's lock is taken over, its half-written temp file removed, and
    # (no checkpoint was completed) the run starts from step 0 and ends as the uninterrupted one
    again = run_cli(["train", "--config", str(config), "--out", str(run), "--resume", "auto"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"took over the stale run lock of {run} (process {first.pid} on " in again.stderr
    assert f"removed {tmp}, left by a writer that was killed mid-write" in again.stderr
    assert not tmp.exists() and not (run / LOCK_NAME).exists()
    assert_same_weights(reference / "model.pt", run / "model.pt")


# ---- 4. a changed config on resume ----

def test_resume_with_changed_config_records_changes_or_refuses_shape_changes(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    base = ["run.ckpt_every_steps=1", "optim.name=adam", "optim.lr=1e-3"]
    reference = train(_cfg(data, *base), tmp_path / "ref")  # 4 steps, uninterrupted

    run = tmp_path / "run"
    cfg = _cfg(data, *base, "debug.kill_after_steps=99")  # debug.* changes are not listed
    train(cfg, run)  # the full run, then make it one interrupted after step 2:
    for path in ckpt.list_checkpoints(run / "checkpoints"):
        if ckpt.load_checkpoint(path)["position"]["global_step"] > 2:
            path.unlink()
    (run / "model.pt").unlink()
    (run / "summary.json").unlink()

    # model / data shape keys: a clean error naming each key and both values, nothing written
    before = _snapshot(run)
    for override, key in (("model.depth=1", "model.depth"), ("model.num_classes=5", "model.num_classes")):
        with pytest.raises(ResumeConfigError, match=f"{key} was .* now "):
            train(_cfg(data, *base, override), run, resume="auto")
    assert _snapshot(run) == before

    # other keys: resumed, every change listed with both values and kept in the run
    changed = _cfg(data, *base, "optim.lr=5e-4", "run.seed=3", "data.num_workers=0")
    result = train(changed, run, resume="auto")
    change = {"optim.lr": {"before": 1e-3, "after": 5e-4}, "run.seed": {"before": 0, "after": 3}}
    recorded = json.loads((run / "config_changes.json").read_text())
    assert [r["changes"] for r in recorded] == [change] and recorded[0]["global_step"] == 2
    assert result["config_changes"] == recorded
    assert json.loads((run / "summary.json").read_text())["config_changes"] == recorded
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["changes"] for r in rows if r["kind"] == "config_change"] == [change]
    # the changed lr really took effect: the weights differ from the uninterrupted run's
    ref, got = weights(tmp_path / "ref" / "model.pt"), weights(run / "model.pt")
    assert any(not torch.equal(ref[k], got[k]) for k in ref)
    assert reference["global_steps"] == result["global_steps"] == 4


# ---- 5. required values (`???`) stay required ----

def test_required_value_marked_in_a_file_stays_required(tmp_path):
    k400 = REPO / "configs" / "k400" / "jointst_b_8x224_iared2.yaml"
    with pytest.raises(ConfigError, match=r"jointst_b_8x224_iared2\.yaml: key 'model\.pretrained_path' "
                                          r"is required \(marked \?\?\?\)"):
        load_config(k400, ["data.root=/x"])
    assert load_config(k400, ["model.pretrained_path=/w.pth"]).model.pretrained_path == "/w.pth"
    # a child file may fill a base's ??? ; a later file or override may mark it again
    (tmp_path / "base.yaml").write_text("model:\n  pretrained_path: ???\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmodel:\n  pretrained_path: /w.pth\ndata: {root: /d}\n")
    assert load_config(tmp_path / "child.yaml").model.pretrained_path == "/w.pth"
    with pytest.raises(ConfigError, match=r"override 'model.pretrained_path=\?\?\?'"):
        load_config(tmp_path / "child.yaml", ["model.pretrained_path=???"])


def test_bad_epochs_unknown_model_kwargs_and_unreadable_weights_are_clean_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"'schedule\.finetune_epochs': epochs must be >= 0, got -1"):
        tiny_config("data.root=/x", "schedule.finetune_epochs=-1")
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    config = tmp_path / "exp.yaml"
    save_config(_cfg(data), config)
    res = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run"),
                   "model.kwargs={embed_dim: 32, num_heads: 2, no_such_arg: 1}"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "key 'model.kwargs'" in res.stderr and "'no_such_arg'" in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    # an unreadable pretrained file: one line naming it
    torn = tmp_path / "dense.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, torn)
    torn.write_bytes(torn.read_bytes()[:500])
    res = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run2"),
                   f"model.pretrained_path={torn}"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{torn}: not a readable weights file: truncated or damaged" in res.stderr


# ---- 6. NaN losses ----

# dense training: (an interpreter would drop the NaN patches: its scores are NaN, never >= 0.5)
SUPERVISED = ["schedule.stages=[supervised]", "schedule.supervised_epochs=2"]

def test_stage_without_a_single_update_is_an_error(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8, nan_rows=tuple(range(8)))
    with pytest.raises(NonFiniteLossError, match=r"stage .* made no update: all of its 4 steps"):
        train(_cfg(data, *SUPERVISED, "run.max_nonfinite=100"), tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_skipped_steps_are_in_the_end_line(tmp_path):
    # items 0 and 1 NaN: the batches holding one are skipped, the others train
    data = random_tensor_file(tmp_path / "d.pt", n=16, nan_rows=(0, 1))
    config = tmp_path / "exp.yaml"
    save_config(_cfg(data, *SUPERVISED, "run.max_nonfinite=100"), config)
    res = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    skipped = summary["nonfinite_steps"]
    assert 1 <= skipped < 8  # each epoch: the one or two batches holding item 0 or 1
    assert f"skipped steps (non-finite loss or gradient): {skipped} of 8" in res.stdout


# ---- 7. malformed list lines count as bad videos ----

@pytest.fixture
def list_with_malformed_lines(tmp_path):
    from videored.data import write_video

    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for i in range(8):
        write_video(folder / f"v{i}.mp4", rng.integers(0, 256, (24, 48, 96, 3), dtype=np.uint8), fps=30)
        lines.append(f"v{i}.mp4 {i % 4}")
    # a header, a label outside the 4 classes, a negative one, a non-integer one, a tab-less
    # comma line: 5 malformed lines among 13
    lines[0:0] = ["path label"]
    lines += ["v0.mp4 7", "v1.mp4 -1", "v2.mp4 x", "v3.mp4,2"]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder


VIDEO = ["data.kind=video", "data.sampling_rate=8", "data.train_jitter_scales=[32, 40]",
         "data.batch_size=4", "schedule.stages=[finetune]", "schedule.finetune_epochs=1"]


def test_malformed_list_lines_are_counted_with_bad_videos(list_with_malformed_lines, tmp_path):
    folder = list_with_malformed_lines
    csv = folder / "train.csv"
    config = tmp_path / "exp.yaml"
    save_config(tiny_config(f"data.root={folder}", *VIDEO, "data.max_bad_fraction=0.5"), config)
    res = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert res.returncode == 0, res.stderr[-3000:]
    subs = json.loads((tmp_path / "run" / "summary.json").read_text())["substitutions"]
    lines = [1, 10, 11, 12, 13]
    assert subs["malformed_lines"] == 5 and subs["items"] == 8
    assert sorted(subs["bad_videos"]) == sorted(f"{csv}:{n}" for n in lines)
    assert "label 7 outside [0, 4)" in subs["bad_videos"][f"{csv}:10"]
    assert "5 malformed list lines left out" in res.stdout

    # 5 of 13 lines (38 %) is over a 0.25 limit: refused before the first step
    save_config(tiny_config(f"data.root={folder}", *VIDEO, "data.max_bad_fraction=0.25"), config)
    res = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run2")])
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "5 of the 13 lines of the training list are malformed" in res.stderr
    assert f"{csv}:10" in res.stderr


# ---- 8. a full disk, and the temp files of killed writers ----

_FSIZE_CHILD = """
import resource, signal, sys
import torch
from videored.atomic_io import WriteError, atomic_save
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB per file
try:
    atomic_save({"w": torch.zeros(4 << 20, dtype=torch.uint8)}, sys.argv[1])  # 4 MiB
except WriteError as err:
    print(err)
    sys.exit(3)
"""


def test_write_beyond_the_file_size_limit_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(3)}, target)
    old = target.read_bytes()
    res = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, str(target)], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 3, res.stderr[-2000:]
    assert res.stdout.strip().startswith(f"file size limit reached at {target}, 4.0 MB needed")
    assert "nothing was overwritten" in res.stdout and "inline_container" not in res.stdout
    assert target.read_bytes() == old and os.listdir(tmp_path) == ["ckpt.pt"]


def test_disk_full_message(tmp_path, monkeypatch):
    import errno

    from videored import atomic_io

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_io._Writer, "write", full)
    with pytest.raises(atomic_io.WriteError, match=rf"^disk full at {tmp_path / 'c.pt'}, 2\.0 MB needed, "
                                                   r"\d+ MB free there; nothing was overwritten$"):
        atomic_io.atomic_save({"w": torch.zeros(1 << 19)}, tmp_path / "c.pt")  # 2 MiB of float32
    assert os.listdir(tmp_path) == []


def test_resume_removes_temp_files_of_a_killed_writer(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    cfg = _cfg(data)
    run = tmp_path / "run"
    train(cfg, run)
    stale = [run / "checkpoints" / (ckpt.checkpoint_name(0, 1, 1) + ".tmp.999999"),
             run / "model.pt.tmp.31337"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    train(cfg, run, resume="auto")
    assert not any(p.exists() for p in stale)


# ---- 9. unreadable or foreign files, in every command ----

def _bad_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(100)}}, good)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(good.read_bytes()[:200])
    foreign = tmp_path / "foreign.pt"
    torch.save({"args": socket.AddressFamily.AF_INET}, foreign)  # a class weights_only refuses
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"hello" * 20)
    return {"torn": torn, "foreign": foreign, "garbage": garbage, "missing": tmp_path / "missing.pt",
            "empty": _touch(tmp_path / "empty.pt")}


def _touch(path):
    path.write_bytes(b"")
    return path


def test_the_one_reader_says_which_file_and_why_on_one_line(tmp_path):
    reasons = {"torn": "truncated or damaged", "foreign": "of class socket.AddressFamily",
               "garbage": "not a torch file", "missing": "not found", "empty": "is empty"}
    for name, path in _bad_files(tmp_path).items():
        with pytest.raises(UnreadableFileError) as err:
            load_torch_file(path, what="checkpoint")
        text = str(err.value)
        assert text.startswith(f"{path}: ") and reasons[name] in text and "\n" not in text, text


def test_eval_and_visualize_give_one_line_errors_for_bad_files(tmp_path):
    files = _bad_files(tmp_path)
    for name in ("torn", "foreign"):
        for args in (["eval", "--checkpoint", str(files[name]), "--out", str(tmp_path / "o")],
                     ["visualize", "--checkpoint", str(files[name]), "-p", str(tmp_path),
                      "--out", str(tmp_path / "v")]):
            res = run_cli(args, timeout=120)
            assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
            assert str(files[name]) in res.stderr
            assert len([ln for ln in res.stderr.splitlines() if str(files[name]) in ln]) == 1


def test_eval_with_a_config_of_another_shape_is_an_error_unless_allow_resize(tmp_path):
    from videored.models import create_model, save_model_file

    model = create_model("timesformer_jointst_tiny_patch16_224", img_size=32, num_frames=2, depth=2,
                         embed_dim=32, num_heads=2, num_classes=3, selector="interpreter")
    save_model_file(model, tmp_path / "model.pt")
    x, y = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 1])
    torch.save({"test": {"x": x, "y": y}}, tmp_path / "data.pt")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"""
model: {{name: timesformer_jointst_tiny_patch16_224, img_size: 32, num_frames: 4, depth: 2,
        num_classes: 3, kwargs: {{embed_dim: 32, num_heads: 2}}}}
data: {{kind: tensor_file, root: {tmp_path / 'data.pt'}, batch_size: 2, num_workers: 0}}
run: {{device: cpu, progress: false}}
""")
    args = ["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "model.pt"), "--out",
            str(tmp_path / "o"), "--speed-runs", "1", "--methods", "original", "--kept-ratio", "0.5"]
    res = run_cli(args, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "embed.time_embed were made for another input shape" in res.stderr
    assert "model.num_frames=4" in res.stderr and "--allow-resize" in res.stderr
    res = run_cli(args + ["--allow-resize"], timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--allow-resize: " in res.stderr and "interpolated embed.time_embed" in res.stderr
