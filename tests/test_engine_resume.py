"""Exact resume: a run killed mid-epoch (hard exit, no cleanup) and resumed with `--resume auto`
ends with bit-identical weights to an uninterrupted run."""
import json

import pytest
import torch

from _engine_utils import assert_same_weights, random_tensor_file, run_cli, tiny_config, weights
from videored.engine import checkpoint as ckpt
from videored.engine.config import save_config
from videored.engine.metrics_log import read_metrics
from videored.engine.trainer import train


def _tensorboard_scalars(folder, skip: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) list as TensorBoard's own reader shows it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"] if not tag.endswith(tuple("/" + k for k in skip))}


@pytest.mark.slow
def test_killed_run_resumes_exactly(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=24)
    # 6 steps per epoch; stages: supervised 1 epoch (steps 1-6), interpreter 2 epochs (7-18),
    # finetune 1 epoch (19-24). Adam state, warm-up + cosine, REINFORCE sampling all matter.
    cfg = tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                      "schedule.stages=[supervised, interpreter, finetune]",
                      "schedule.supervised_epochs=1", "schedule.interpreter_epochs=2",
                      "schedule.finetune_epochs=1", "optim.name=adam", "optim.lr=1e-3",
                      "optim.warmup_epochs=0.5", "optim.clip_grad=1.0", "run.ckpt_every_steps=4",
                      "run.keep_checkpoints=2", "model.kwargs={embed_dim: 32, num_heads: 2, drop_path_rate: 0.1}")
    config = tmp_path / "exp.yaml"
    save_config(cfg, config)

    reference = train(cfg, tmp_path / "ref")  # uninterrupted, in this process (1 thread)

    run = tmp_path / "run"
    killed = run_cli(["train", "--config", str(config), "--out", str(run), "debug.kill_after_steps=18"])
    assert killed.returncode == 17, killed.stderr[-2000:]
    assert not (run / "model.pt").exists()
    # newest surviving checkpoint: mid-epoch, interpreter stage (index 1), epoch 1, step 4 = global step 16
    names = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    assert names[0] == ckpt.checkpoint_name(1, 1, 4) and len(names) == 2
    # a torn, newer-looking file must be skipped
    (run / "checkpoints" / ckpt.checkpoint_name(1, 1, 5)).write_bytes(b"\x80\x02torn")

    resumed = run_cli(["train", "--config", str(config), "--out", str(run), "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "skipping checkpoint" in resumed.stderr and "resuming from" in resumed.stdout

    assert_same_weights(tmp_path / "ref" / "model.pt", run / "model.pt")
    # metrics.jsonl holds every step once, as the uninterrupted run's does: the rows the killed
    # run logged after its last checkpoint (steps 17, 18) were dropped when it resumed at 16
    ref_rows, run_rows = (read_metrics(p / "metrics.jsonl") for p in (tmp_path / "ref", run))
    resumes = [r for r in run_rows if r["kind"] == "resume"]
    assert [(r["global_step"], r["dropped_rows"] > 0) for r in resumes] == [(16, True)]
    volatile = ("time", "throughput")
    def same(rows):
        return [{k: v for k, v in r.items() if k not in volatile} for r in rows if r["kind"] != "resume"]
    assert same(run_rows) == same(ref_rows)
    # and TensorBoard shows each step once too: the resume purged the killed run's events of
    # steps 17, 18 (its first writer logged them, the second logs them again)
    assert _tensorboard_scalars(run / "tb", volatile) == _tensorboard_scalars(tmp_path / "ref" / "tb", volatile)
    # the per-stage metrics agree too (running epoch sums were restored mid-epoch)
    summary = json.loads((run / "summary.json").read_text())
    for a, b in zip(reference["stages"], summary["stages"]):
        assert a["stage"] == b["stage"]
        for key in a["train"]:
            assert a["train"][key] == pytest.approx(b["train"][key], rel=1e-9), (a["stage"], key)


def test_resume_auto_without_checkpoint_starts_fresh_and_finished_run_is_a_no_op(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    cfg = tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                      "schedule.stages=[finetune]", "schedule.finetune_epochs=1")
    first = train(cfg, tmp_path / "run", resume="auto")
    assert first["global_steps"] == 2
    before = weights(tmp_path / "run" / "model.pt")
    again = train(cfg, tmp_path / "run", resume="auto")  # resumes at the end: nothing left to do
    assert again["global_steps"] == 2
    after = weights(tmp_path / "run" / "model.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    other = tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                        "schedule.stages=[finetune]", "schedule.finetune_epochs=2")
    with pytest.raises(ValueError, match="stage plan"):
        train(other, tmp_path / "run", resume="auto")
