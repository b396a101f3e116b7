"""The submitit launcher without a cluster: grid expansion, resource flags, requeue argv, the
sweep summary, and one real training run through submitit's in-process debug executor."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import submitit
import torch
from omegaconf import OmegaConf
from submitit.core.utils import JobPaths, cloudpickle_dump

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `slurm/` is a top-level folder of the checkout, not installed

from _engine_utils import assert_same_weights  # noqa: E402
from slurm import submit  # noqa: E402
from slurm.collect import collect, flatten_numbers, markdown_table, write_summary  # noqa: E402
from videored.launch import VideoredJob, with_resume_auto  # noqa: E402


def test_grid_is_the_cartesian_product_in_order():
    grid = submit.parse_grid(["reinforce.tau=0.5,1.0", "model.threshold=0.4,0.5,0.6"])
    assert grid == {"reinforce.tau": ["0.5", "1.0"], "model.threshold": ["0.4", "0.5", "0.6"]}
    points = submit.grid_points(grid)
    # 2 x 3 points, the last key varying fastest (itertools.product order)
    assert len(points) == 6
    assert points[0] == {"reinforce.tau": "0.5", "model.threshold": "0.4"}
    assert points[2] == {"reinforce.tau": "0.5", "model.threshold": "0.6"}
    assert points[3] == {"reinforce.tau": "1.0", "model.threshold": "0.4"}
    assert len({tuple(p.items()) for p in points}) == 6


def test_grid_values_keep_bracketed_lists_whole_and_reject_bad_items():
    assert submit.split_values("[256,320],[128,160]") == ["[256,320]", "[128,160]"]
    assert submit.parse_grid(["data.train_jitter_scales=[256,320],[128,160]"]) == {
        "data.train_jitter_scales": ["[256,320]", "[128,160]"]}
    for bad in (["tau"], ["=1,2"], ["tau=1,,2"], ["a=1", "a=2"]):
        with pytest.raises(ValueError, match="--grid"):
            submit.parse_grid(bad)


@pytest.mark.parametrize("text,gb", [("64", 64.0), ("64G", 64.0), ("64GB", 64.0), ("512M", 0.5),
                                     ("2T", 2048.0), ("1.5g", 1.5)])
def test_mem_parsing(text, gb):
    assert submit.parse_mem(text) == gb


def test_resume_auto_replaces_any_resume_flag():
    assert with_resume_auto(["train", "--config", "c.yaml"]) == ["train", "--config", "c.yaml", "--resume", "auto"]
    assert with_resume_auto(["train", "--resume", "x.pt", "a=1"]) == ["train", "a=1", "--resume", "auto"]
    assert with_resume_auto(["train", "--resume=x.pt"]) == ["train", "--resume", "auto"]


def test_checkpoint_requeues_train_with_resume_auto_and_eval_unchanged(tmp_path):
    job = VideoredJob(["train", "--config", "c.yaml", "--out", str(tmp_path)], cwd=str(tmp_path), threads=3)
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    again = delayed.function
    assert again.argv == ["train", "--config", "c.yaml", "--out", str(tmp_path), "--resume", "auto"]
    assert (again.cwd, again.threads) == (str(tmp_path), 3)
    assert again.checkpoint().function.argv == again.argv  # a second preemption: still one --resume
    ev = VideoredJob(["eval", "--config", "c.yaml", "--out", "o"])
    assert ev.checkpoint().function.argv == ev.argv
    with pytest.raises(ValueError, match="train\\|eval"):
        VideoredJob(["bench"])


def _args(tmp_path, *extra):
    args, forwarded = submit.build_parser().parse_known_args(
        ["train", "--job-dir", str(tmp_path), *extra, "--config", "c.yaml", "optim.lr=0.1"])
    return args, forwarded


@pytest.fixture
def without_srun(monkeypatch):
    """These tests read the sbatch script submitit writes; that needs no cluster, but submitit's
    SlurmExecutor refuses to start where `srun` is not on PATH, and the launcher where `sbatch`
    is not. Pretend they are."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    monkeypatch.setattr(submit, "resolve_cluster", lambda requested: requested or "slurm")


def test_resource_flags_reach_the_sbatch_script(tmp_path, without_srun):
    args, forwarded = _args(tmp_path, "--cluster", "slurm", "--nodes", "2", "--gpus-per-node", "8",
                            "--partition", "P", "--timeout", "4320", "--account", "A", "--qos", "Q",
                            "--constraint", "volta32gb", "--mem", "64G", "--cpus-per-task", "10",
                            "--signal-delay", "300")
    assert forwarded == ["--config", "c.yaml", "optim.lr=0.1"]  # handed to videored unchanged
    ex = submit.build_executor(args, tmp_path / "submitit", "train")
    script = ex._executor._make_submission_file_text("python -m x", "%j")
    for line in ("--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8", "--partition=P",
                 "--time=4320", "--account=A", "--qos=Q", "--constraint=volta32gb", "--mem=64GB",
                 "--cpus-per-task=10", "--signal=USR2@300", "--job-name=videored-train"):
        assert f"#SBATCH {line}" in script, line


def test_cpu_jobs_default_to_one_task_per_node(tmp_path, without_srun):
    args, _ = _args(tmp_path, "--cluster", "slurm")
    script = submit.build_executor(args, tmp_path, "train")._executor._make_submission_file_text("x", "%j")
    assert "#SBATCH --ntasks-per-node=1" in script
    assert "--gpus-per-node" not in script


def test_cluster_slurm_without_sbatch_is_an_error_and_the_local_fallback_is_said(tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(submit.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit):
        submit.main(["train", "--cluster", "slurm", "--job-dir", str(tmp_path), "--config", "c.yaml"])
    assert "--cluster slurm: `sbatch` is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "submitit").exists()
    assert submit.resolve_cluster(None) == "local"
    assert "no `sbatch` on PATH: running as local processes" in capsys.readouterr().err
    assert submit.resolve_cluster("local") == "local" and capsys.readouterr().err == ""


def test_help_shows_defaults_and_what_is_passed_through(capsys):
    for action, words in (("train", ["(default: 60)", "(default: 10)", "--resume auto"]),
                          ("eval", ["(default: 60)", "starts again from the first video"]),
                          ("sweep", ["(default: 256)", "(default: train)"])):
        with pytest.raises(SystemExit):
            submit.main([action, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "Every argument not listed above is handed to `videored" in text
        assert "--dense-checkpoint" in text and "(default: None)" not in text
        for word in words:
            assert word in text, (action, word)


def test_launcher_rejects_out_and_bad_videored_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        submit.main(["train", "--cluster", "debug", "--job-dir", str(tmp_path), "--config", "c.yaml",
                     "--out", "x"])
    assert "--job-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # videored train requires --config: caught before submitting
        submit.main(["train", "--cluster", "debug", "--job-dir", str(tmp_path)])
    assert not (tmp_path / "submitit").exists()


def _fake_sweep(root: Path) -> None:
    """Three points as a finished sweep leaves them: p000 ok, p001 failed, p002 never ran."""
    folder = root / "submitit"
    points = []
    for i, tau in enumerate(("0.5", "1.0", "1.5")):
        points.append({"name": f"p{i:03d}", "overrides": {"reinforce.tau": tau},
                       "run_dir": str(root / f"p{i:03d}"), "job_id": f"7_{i}", "argv": []})
    (root / "p000").mkdir(parents=True)
    summary = {"stages": [{"stage": "interpreter0", "train": {"loss": 1.0, "reward": 0.25}},
                          {"stage": "finetune0", "train": {"loss": 0.5, "acc": 0.75},
                           "val": {"acc": 0.625, "kept": 0.375}}],
               "global_steps": 12, "world_size": 2}
    (root / "p000" / "summary.json").write_text(json.dumps(summary))
    folder.mkdir(parents=True)
    cloudpickle_dump(("error", "Traceback (most recent call last):\n  ...\nValueError: bad tau\n"),
                     JobPaths(folder, job_id="7_1", task_id=0).result_pickle)
    manifest = {"command": "train", "cluster": "local", "grid": {"reinforce.tau": ["0.5", "1.0", "1.5"]},
                "submitit_folder": str(folder), "points": points}
    (root / "sweep.json").write_text(json.dumps(manifest))


def test_collect_lists_every_point_with_its_status(tmp_path):
    _fake_sweep(tmp_path)
    rows = collect(tmp_path)
    assert [r["name"] for r in rows] == ["p000", "p001", "p002"]
    assert [r["status"] for r in rows] == ["ok", "failed", "missing"]
    # the last stage's numbers, as written in summary.json
    assert rows[0]["metrics"] == {"train.loss": 0.5, "train.acc": 0.75, "val.acc": 0.625,
                                  "val.kept": 0.375, "global_steps": 12.0}
    assert rows[1]["error"] == "ValueError: bad tau"
    md, js = write_summary(tmp_path, rows)
    assert json.loads(js.read_text()) == rows
    table = md.read_text()
    assert "3 points: 1 failed, 1 missing, 1 ok" in table
    assert "| p000 | 0.5 | ok | 0.5 | 0.75 | 0.625 | 0.375 | 12 | — |" in table
    assert "| p001 | 1.0 | failed | — | — | — | — | — | ValueError: bad tau |" in table
    assert "| p002 | 1.5 | missing |" in table
    assert submit.main(["collect", "--job-dir", str(tmp_path)]) == 1  # not every point is ok


def test_flatten_numbers_skips_non_numbers():
    data = {"a": 1, "b": {"c": 2.5, "d": "x", "e": True, "f": [1, 2]}, "g": None}
    assert flatten_numbers(data) == {"a": 1.0, "b.c": 2.5}
    assert markdown_table([]).startswith("# Sweep summary\n\n0 points")


def _tiny_run_files(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(8) % 2
    x = torch.randn(8, 3, 2, 32, 32, generator=g) * 0.5 + y.view(8, 1, 1, 1, 1).float()
    torch.save({"train": {"x": x, "y": y}}, tmp_path / "data.pt")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model: {name: timesformer_jointst_tiny_patch16_224, num_classes: 2, img_size: 32,"
        " num_frames: 2, depth: 1}\n"
        f"data: {{kind: tensor_file, root: {tmp_path / 'data.pt'}, batch_size: 4, num_workers: 0}}\n"
        "schedule: {stages: [interpreter, finetune], interpreter_epochs: 1, finetune_epochs: 1}\n"
        "run: {device: cpu, progress: false, ckpt_every_steps: 0}\n")
    return cfg


def test_debug_executor_runs_the_same_training_as_the_cli(tmp_path, monkeypatch):
    """The launcher's job must be exactly `videored train` with the forwarded overrides."""
    from videored.cli import main as videored_main

    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # the launcher edits it
    cfg = _tiny_run_files(tmp_path)
    assert videored_main(["train", "--config", str(cfg), "--out", str(tmp_path / "cli"),
                          "optim.lr=0.05"]) == 0
    env_before = dict(os.environ)
    assert submit.main(["train", "--cluster", "debug", "--job-dir", str(tmp_path / "job"),
                        "--config", str(cfg), "optim.lr=0.05"]) == 0
    # RANK, MASTER_ADDR, ... do not leak into this process; only PYTHONPATH gains the checkout
    assert {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} == \
        {k: v for k, v in env_before.items() if k != "PYTHONPATH"}
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert_same_weights(tmp_path / "cli" / "model.pt", tmp_path / "job" / "model.pt")
    assert OmegaConf.load(tmp_path / "job" / "config.yaml").optim.lr == 0.05


def test_eval_points_show_each_methods_headline_numbers(tmp_path):
    from slurm.collect import metrics_of

    results = {"world_size": 2, "methods": {
        "original": {"clip1_err": 20.0, "video1_err": 17.5, "kept_ratio": 1.0, "gflops": 0.5,
                     "clips_per_s": 10.0, "per_class_video1_acc": [80.0, 85.0]},
        "interpreter": {"clip1_err": 25.0, "video1_err": 22.5, "kept_ratio": 0.5, "gflops": 0.25,
                        "clip1_top5_err": 1.0}}}
    assert metrics_of("eval", results) == {
        "original.clip1_err": 20.0, "original.video1_err": 17.5, "original.kept_ratio": 1.0,
        "original.gflops": 0.5, "original.clips_per_s": 10.0, "interpreter.clip1_err": 25.0,
        "interpreter.video1_err": 22.5, "interpreter.kept_ratio": 0.5, "interpreter.gflops": 0.25}


class _FakeJob:
    """The parts of a submitit job `wait_for_jobs` uses."""

    def __init__(self, folder: Path, job_id: str, outcome=None) -> None:
        self.job_id, self.paths, self.outcome = job_id, JobPaths(folder, job_id=job_id, task_id=0), outcome
        self.read = False

    def results(self):
        self.read = True
        if self.outcome[0] == "error":
            raise RuntimeError(self.outcome[1])
        return [self.outcome[1]]


def test_wait_gives_up_on_a_job_that_left_the_queue_without_a_result(tmp_path, monkeypatch, capsys):
    import slurm.queue as queue

    done = _FakeJob(tmp_path, "1", ("success", 0))
    cloudpickle_dump(done.outcome, done.paths.result_pickle)
    broken = _FakeJob(tmp_path, "2", ("error", "boom"))
    cloudpickle_dump(broken.outcome, broken.paths.result_pickle)
    cancelled = _FakeJob(tmp_path, "3")
    states = iter(["pending", "running", "cancelled"])  # what squeue says on successive polls
    asked = []
    monkeypatch.setattr(queue, "queue_state", lambda jid: asked.append(jid) or next(states))
    failed = queue.wait_for_jobs([done, broken, cancelled], slurm=True, poll_s=0.0, grace_s=0.0)
    assert failed == 2  # "2" raised its error, "3" ended without a result file
    assert asked == ["3", "3", "3"]  # jobs with a result file are never polled
    assert done.read and broken.read and not cancelled.read
    err = capsys.readouterr().err
    assert "job 3 ended (cancelled) without a result" in err and "job 2 failed: boom" in err
