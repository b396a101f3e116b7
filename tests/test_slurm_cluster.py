"""Real SLURM jobs through the launcher (`bash slurm/local_cluster.sh up` starts a one-node cluster).

Each test checks the cluster's result against an independent reference computed here, in this
process, with plain `videored train`:
  - 2-task gloo DDP (batch 2 per task) == one process with batch 4 (DDP averages gradients);
  - a job preempted with `scancel --signal=USR2` requeues, resumes from its newest checkpoint
    and ends with bit-identical weights to an uninterrupted run (1 task, and 2 gloo tasks);
  - the same when USR2 arrives inside a checkpoint write (start, middle, end) or the model.pt write:
    the signal is held until the file is renamed, and the job resumes from that very file;
  - a 3-point sweep array: the summary lists all three with each run's own numbers.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from submitit.core.utils import JobPaths, pickle_load

from videored.cli import main as videored_main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm
JOB_WAIT_S = 240  # generous: the one-node cluster may be busy with another test run's jobs


def _cluster_cpus() -> tuple[int, str]:
    """(CPUs of the first usable node, "") or (0, why there is no cluster)."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return 0, "sinfo/sbatch not on PATH"
    try:  # sinfo retries an absent controller for ~10 s before failing
        res = subprocess.run(["sinfo", "-h", "-o", "%T %c"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return 0, "sinfo timed out"
    if res.returncode != 0:
        return 0, f"sinfo failed: {res.stderr.strip() or res.stdout.strip()}"
    for line in res.stdout.splitlines():
        state, cpus = line.split()
        if state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing"):
            return int(cpus), ""
    return 0, f"no usable node (sinfo: {res.stdout.strip()!r})"


@pytest.fixture(scope="module")
def cluster_cpus() -> int:
    cpus, why = _cluster_cpus()
    if not cpus:
        pytest.skip(f"no SLURM cluster reachable ({why}); start one with `sudo bash slurm/local_cluster.sh up`")
    return cpus


@pytest.fixture
def job_name():
    """A unique job name; whatever is still queued under it is cancelled after the test."""
    name = f"videored-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", "--name", name], capture_output=True, timeout=30)


def write_run_files(root: Path, samples: int, separation: float = 0.4) -> Path:
    """A tiny two-class video tensor file and a config training a depth-2 JointST on it."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(samples) % 2
    x = torch.randn(samples, 3, 2, 32, 32, generator=g) + separation * y.view(-1, 1, 1, 1, 1).float()
    torch.save({"train": {"x": x, "y": y}, "val": {"x": x[:8], "y": y[:8]}}, root / "data.pt")
    cfg = root / "tiny.yaml"
    cfg.write_text(
        "model: {name: timesformer_jointst_tiny_patch16_224, num_classes: 2, img_size: 32,"
        " num_frames: 2, depth: 2}\n"
        f"data: {{kind: tensor_file, root: {root / 'data.pt'}, batch_size: 4, num_workers: 0,"
        " val_split: val}\n"
        "optim: {lr: 0.01}\n"
        "schedule: {stages: [interpreter, finetune], interpreter_epochs: 2, finetune_epochs: 1}\n"
        "run: {device: cpu, progress: false, log_every: 1, ckpt_every_steps: 2}\n")
    return cfg


def launch(*args: str) -> str:
    """Run `python -m slurm.submit ...` from the checkout; returns its stdout."""
    res = subprocess.run([sys.executable, "-m", "slurm.submit", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=JOB_WAIT_S + 60)
    assert res.returncode == 0, f"launcher failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


def job_ids(stdout: str) -> list[str]:
    """Job ids from the launcher's "submitted slurm job 12: ..." or "... array task(s): 9_0, 9_1"."""
    m = re.search(r"submitted slurm job (\S+):", stdout) or \
        re.search(r"submitted \d+ slurm array task\(s\): (.+)", stdout)
    assert m, stdout
    return [j.strip() for j in m.group(1).split(",")]


def task_outcome(folder: Path, job_id: str, task: int) -> tuple[str, object]:
    return pickle_load(JobPaths(folder, job_id=job_id, task_id=task).result_pickle)


def reference_run(cfg: Path, out: Path, *overrides: str) -> None:
    assert videored_main(["train", "--config", str(cfg), "--out", str(out), *overrides]) == 0


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)["model"]


def test_two_task_gloo_ddp_job_matches_one_process_with_the_global_batch(tmp_path, cluster_cpus, job_name):
    if cluster_cpus < 2:
        pytest.skip(f"the cluster node has {cluster_cpus} CPU(s); a 2-task job needs 2")
    cfg = write_run_files(tmp_path, samples=16)
    common = ["schedule.stages=[finetune]", "schedule.finetune_epochs=2"]  # deterministic stage
    out = launch("train", "--cluster", "slurm", "--wait", "--job-name", job_name,
                 "--tasks-per-node", "2", "--cpus-per-task", "1", "--timeout", "30",
                 "--job-dir", str(tmp_path / "job"), "--config", str(cfg), "data.batch_size=2", *common)
    (jid,) = job_ids(out)
    for rank in (0, 1):  # both ranks ran the training and returned videored's status 0
        assert task_outcome(tmp_path / "job" / "submitit", jid, rank) == ("success", 0)

    reference_run(cfg, tmp_path / "ref", "data.batch_size=4", *common)
    got = json.loads((tmp_path / "job" / "summary.json").read_text())
    ref = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert got["world_size"] == 2 and ref["world_size"] == 1
    assert got["global_steps"] == ref["global_steps"] == 2 * 16 // (2 * 2)  # epochs * samples / global batch
    assert len(got["stages"]) == len(ref["stages"]) == 1
    g, r = got["stages"][0], ref["stages"][0]
    assert g["val"]["samples"] == 8  # the 8 validation clips, split over 2 ranks, counted once
    for part in ("train", "val"):
        assert g[part].keys() == r[part].keys()
        for key in r[part]:
            assert g[part][key] == pytest.approx(r[part][key], rel=1e-5, abs=1e-6), f"{part}.{key}"
    w_got, w_ref = load_weights(tmp_path / "job"), load_weights(tmp_path / "ref")
    assert w_got.keys() == w_ref.keys()
    for k in w_ref:
        torch.testing.assert_close(w_got[k], w_ref[k], rtol=1e-5, atol=1e-6, msg=k)


def _wait_for(predicate, what: str, timeout: float = JOB_WAIT_S, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.parametrize("tasks", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_preempted_job_requeues_and_resumes_to_the_uninterrupted_weights(tmp_path, cluster_cpus, job_name,
                                                                         tasks):
    """One task: the reference is `videored train` in this process. Two gloo tasks (rank 1 is
    killed mid-collective when rank 0 leaves for the requeue): an uninterrupted 2-task job."""
    if cluster_cpus < tasks:
        pytest.skip(f"the cluster node has {cluster_cpus} CPU(s); a {tasks}-task job needs {tasks}")
    batch = 4 // tasks  # the same global batch either way
    cfg = write_run_files(tmp_path, samples=96)  # 24 steps/epoch, 72 steps: time to preempt
    flags = ["--cluster", "slurm", "--job-name", job_name, "--tasks-per-node", str(tasks),
             "--cpus-per-task", "1", "--timeout", "60", "--signal-delay", "30"]
    job_dir = tmp_path / "job"
    out = launch("train", *flags, "--job-dir", str(job_dir), "--config", str(cfg), f"data.batch_size={batch}")
    (jid,) = job_ids(out)
    first = _wait_for(lambda: sorted((job_dir / "checkpoints").glob("ckpt_*.pt")), "the first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", jid], check=True, timeout=30)  # SLURM's preemption warning
    folder = job_dir / "submitit"
    _wait_for(lambda: all(JobPaths(folder, job_id=jid, task_id=r).result_pickle.exists() for r in range(tasks)),
              "the requeued job to end", every=0.5)
    for rank in range(tasks):
        assert task_outcome(folder, jid, rank) == ("success", 0)

    log = JobPaths(folder, job_id=jid, task_id=0).stdout.read_text()
    assert "this job is preempted" in log and f"Requeued job {jid}" in log, log
    m = re.search(r"resuming from (\S+ckpt_s\d+_e\d+_i\d+\.pt) at \{'stage': (\d+), 'epoch': (\d+), "
                  r"'step': (\d+), 'global_step': (\d+)\}", log)
    assert m, f"the requeued run did not resume from a checkpoint:\n{log}"
    resumed_step = int(m.group(5))
    total = 3 * 96 // 4
    assert 0 < resumed_step < total  # it resumed mid-run, not from scratch and not after the end
    assert Path(m.group(1)).name >= first[0].name

    ref_dir = tmp_path / "ref"
    if tasks == 1:
        reference_run(cfg, ref_dir)
    else:
        launch("train", *flags, "--wait", "--job-dir", str(ref_dir), "--config", str(cfg),
               f"data.batch_size={batch}")
    w_got, w_ref = load_weights(job_dir), load_weights(ref_dir)
    assert w_got.keys() == w_ref.keys()
    for k in w_ref:  # exact resume: same data order, RNG states, optimizer and lr schedule
        assert torch.equal(w_got[k], w_ref[k]), f"{k}: max |diff| {(w_got[k] - w_ref[k]).abs().max()}"
    got = json.loads((job_dir / "summary.json").read_text())
    assert got == json.loads((ref_dir / "summary.json").read_text())
    assert got["global_steps"] == total and got["world_size"] == tasks


def test_three_point_sweep_array_summary_lists_every_point(tmp_path, cluster_cpus, job_name):
    cfg = write_run_files(tmp_path, samples=16)
    thresholds = ["0.3", "0.5", "0.7"]
    root = tmp_path / "sweep"
    out = launch("sweep", "--cluster", "slurm", "--wait", "--job-name", job_name, "--cpus-per-task", "1",
                 "--timeout", "30", "--job-dir", str(root), "--grid", f"model.threshold={','.join(thresholds)}",
                 "--config", str(cfg))
    ids = job_ids(out)
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(3)]  # one SLURM job array of three tasks

    rows = json.loads((root / "sweep_summary.json").read_text())
    assert [r["name"] for r in rows] == ["p000", "p001", "p002"]
    assert [r["overrides"] for r in rows] == [{"model.threshold": t} for t in thresholds]
    assert [r["status"] for r in rows] == ["ok"] * 3
    table = (root / "sweep_summary.md").read_text()
    assert "3 points: 3 ok" in table
    for row, t in zip(rows, thresholds):
        run = Path(row["run_dir"])
        assert OmegaConf.load(run / "config.yaml").model.threshold == float(t)  # the grid reached the job
        last = json.loads((run / "summary.json").read_text())["stages"][-1]
        assert row["metrics"]["val.kept"] == last["val"]["kept"]
        assert row["metrics"]["train.loss"] == last["train"]["loss"]
        assert f"| {row['name']} | {t} | ok | " in table


def test_waiting_ends_for_a_cancelled_job_that_leaves_no_result(tmp_path, cluster_cpus, job_name):
    """Without sacct submitit would wait forever for a job killed before writing its result."""
    from submitit import SlurmJob

    sys.path.insert(0, str(REPO))
    from slurm.queue import queue_state, wait_for_jobs

    cfg = write_run_files(tmp_path, samples=16)
    out = launch("train", "--cluster", "slurm", "--job-name", job_name, "--timeout", "10",
                 "--job-dir", str(tmp_path / "job"), "--config", str(cfg))
    (jid,) = job_ids(out)
    subprocess.run(["scancel", jid], check=True, timeout=30)
    assert _wait_for(lambda: queue_state(jid) == "cancelled", "squeue to report the job cancelled", timeout=60)
    job = SlurmJob(tmp_path / "job" / "submitit", jid)
    assert wait_for_jobs([job], slurm=True, poll_s=0.2, grace_s=1.0) == 1
    assert not job.paths.result_pickle.exists()


@pytest.mark.parametrize("phase, file", [("start", "checkpoint"), ("middle", "checkpoint"),
                                         ("end", "checkpoint"), ("middle", "model")])
def test_preemption_during_a_checkpoint_write_requeues_and_resumes_exactly(tmp_path, cluster_cpus, job_name,
                                                                           phase, file):
    """USR2 while the job sits inside `atomic_save` (paused there by debug.pause_write_*): the
    write completes, then submitit checkpoints and requeues; the requeued job resumes from the very
    file the signal interrupted and ends with the uninterrupted run's weights and summary."""
    from videored.engine.fault_injection import MARKER

    cfg = write_run_files(tmp_path, samples=32)  # 8 steps/epoch, 24 steps; checkpoints every 2
    pause = [f"debug.pause_write_at={phase}", f"debug.pause_write_file={file}", "debug.pause_write_s=8"]
    job_dir = tmp_path / "job"
    out = launch("train", "--cluster", "slurm", "--job-name", job_name, "--cpus-per-task", "1",
                 "--timeout", "60", "--signal-delay", "30", "--job-dir", str(job_dir), "--config", str(cfg),
                 *pause)
    (jid,) = job_ids(out)
    marker = _wait_for(lambda: (job_dir / MARKER).exists() and (job_dir / MARKER), "the paused write")
    assert marker.read_text().startswith(f"{file} {phase} ")
    subprocess.run(["scancel", "--signal=USR2", jid], check=True, timeout=30)
    folder = job_dir / "submitit"
    result = JobPaths(folder, job_id=jid, task_id=0).result_pickle
    _wait_for(result.exists, "the requeued job to end", every=0.5)
    log = JobPaths(folder, job_id=jid, task_id=0).stdout.read_text()
    err = JobPaths(folder, job_id=jid, task_id=0).stderr.read_text()
    assert task_outcome(folder, jid, 0) == ("success", 0), err[-3000:]

    written = "model.pt" if file == "model" else ckpt_name_at_step(2)
    assert re.search(rf"SIGUSR2 arrived while writing \S+/{re.escape(written)}; delivered", err), err[-3000:]
    assert "this job is preempted" in log and f"Requeued job {jid}" in log, log
    assert "unexpected pos" not in err
    m = re.search(r"resuming from (\S+\.pt) at", log)
    assert m, f"the requeued run did not resume from a checkpoint:\n{log}"
    if file == "checkpoint":  # from the file whose write the signal hit
        assert Path(m.group(1)).name == written

    reference_run(cfg, tmp_path / "ref")
    w_got, w_ref = load_weights(job_dir), load_weights(tmp_path / "ref")
    assert w_got.keys() == w_ref.keys()
    for k in w_ref:
        assert torch.equal(w_got[k], w_ref[k]), f"{k}: max |diff| {(w_got[k] - w_ref[k]).abs().max()}"
    assert json.loads((job_dir / "summary.json").read_text()) == json.loads((tmp_path / "ref" / "summary.json").read_text())


def ckpt_name_at_step(step: int) -> str:
    from videored.engine.checkpoint import checkpoint_name

    return checkpoint_name(0, 0, step)
