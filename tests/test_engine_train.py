"""The train command's outputs (run dir, metrics), non-finite handling and CLI errors."""
import json

import pytest
import yaml

from _engine_utils import random_tensor_file, tiny_config
from videored.cli import main as cli_main
from videored.engine.metrics_log import read_metrics
from videored.engine.trainer import NonFiniteLossError, train


def test_cli_run_dir_contents_and_metrics(tmp_path, capsys):
    data = random_tensor_file(tmp_path / "d.pt", n=16)
    exp = tmp_path / "exp.yaml"
    exp.write_text("model:\n  name: timesformer_jointst_tiny_patch16_224\n  num_classes: 4\n"
                   "  img_size: 32\n  num_frames: 2\n  depth: 2\n  kwargs: {embed_dim: 32, num_heads: 2}\n"
                   f"data:\n  kind: tensor_file\n  root: {data}\n  batch_size: 4\n  num_workers: 0\n"
                   f"  val_split: train\nrun:\n  progress: false\n  log_every: 2\n", encoding="utf-8")
    out = tmp_path / "run"
    rc = cli_main(["train", "--config", str(exp), "--out", str(out), "schedule.interpreter_epochs=2",
                   "schedule.finetune_epochs=1", "optim.lr=0.01"])
    assert rc == 0
    assert "interpreter0" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["schedule"]["interpreter_epochs"] == 2 and saved["optim"]["lr"] == 0.01  # resolved
    assert saved["reinforce"]["tau"] == 1.5  # defaults filled in
    rows = read_metrics(out / "metrics.jsonl")
    steps = [r for r in rows if r["kind"] == "step" and r["stage"] == "interpreter0"]
    assert len(steps) == 4  # 8 steps, a row every 2
    for key in ("reward", "reward_greedy", "kept", "kept_greedy", "acc_sampled", "acc_greedy",
                "loss", "lr", "throughput", "advantage"):
        assert key in steps[0], key
    assert all(0.0 <= r["kept"] <= 1.0 and r["throughput"] > 0 for r in steps)
    # reward = 1 - kept^2 when correct, -tau when wrong: bounded by those
    assert all(-1.5 <= r["reward"] <= 1.0 for r in steps)
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [(r["stage"], r["epoch"]) for r in epochs] == [("interpreter0", 0), ("interpreter0", 1), ("finetune0", 0)]
    assert {r["stage"] for r in rows if r["kind"] == "val"} == {"interpreter0", "finetune0"}
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["interpreter0", "finetune0"]
    assert summary["stages"][1]["val"]["samples"] == 16
    assert (out / "model.pt").is_file() and list((out / "checkpoints").glob("ckpt_*.pt"))
    # model.pt rebuilds through the models package (what `videored eval` uses)
    from videored.models import load_model_file
    model = load_model_file(out / "model.pt")
    assert model.groups == 1 and model.num_patches == 8


def test_cli_config_error_exit_code(tmp_path, capsys):
    exp = tmp_path / "bad.yaml"
    exp.write_text("data:\n  root: x\n  bacth_size: 3\n", encoding="utf-8")
    assert cli_main(["train", "--config", str(exp)]) == 2
    assert "data.bacth_size" in capsys.readouterr().err


def test_non_finite_losses_are_skipped_counted_and_limited(tmp_path):
    # 3 of 16 samples are NaN: with batch 4 and no shuffle control, some batches hit them.
    data = random_tensor_file(tmp_path / "d.pt", n=16, nan_rows=(0, 5, 10))
    base = [f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
            "schedule.stages=[supervised]", "schedule.supervised_epochs=2"]
    summary = train(tiny_config(*base, "run.max_nonfinite=100"), tmp_path / "ok")
    bad = [r for r in read_metrics(tmp_path / "ok" / "metrics.jsonl") if r["kind"] == "nonfinite"]
    assert summary["nonfinite_steps"] == len(bad) >= 2
    assert all(r["what"] == "loss" for r in bad)
    epoch_rows = [r for r in read_metrics(tmp_path / "ok" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert all(isinstance(r["loss"], float) for r in epoch_rows)  # skipped steps kept out of the means
    with pytest.raises(NonFiniteLossError, match="run.max_nonfinite=1"):
        train(tiny_config(*base, "run.max_nonfinite=1"), tmp_path / "stop")
