"""SPViT's and SViT's training recipes (their table entries' `train_recipe`) through the stage
engine: a supervised stage with schedule.reduction = spvit | svit adds the keep-ratio loss (and
SPViT's distillation from the dense starting model), moves each stage's kept ratio toward its
target, and resumes exactly after a kill."""
from __future__ import annotations

import pytest
import torch

from _engine_utils import (assert_same_weights, kill_then_resume, random_tensor_file,
                           tiny_config)
from videored.engine.config import ConfigError
from videored.engine.metrics_log import read_metrics
from videored.engine.trainer import train
from videored.models.methods import get_method

# far from where untrained pruners start (~0.3 and ~0.1 kept after the SPViT stages, ~0.3-0.4
# per SViT gate): SPViT is pushed up, SViT down
TARGETS = {"spvit": [0.9, 0.8], "svit": [0.05, 0.05]}


def _cfg(data, method: str, *extra: str):
    return tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                       "data.val_split=train", "schedule.stages=[supervised]",
                       "schedule.supervised_epochs=5", f"schedule.reduction={method}",
                       f"schedule.pruner_targets={TARGETS[method]}",
                       f"model.kwargs={{embed_dim: 32, num_heads: 2, pruners: [{method}]}}",
                       "run.log_every=1", "optim.lr=0.2", *extra)


@pytest.mark.parametrize("method", ["spvit", "svit"])
def test_training_moves_each_stages_kept_ratio_toward_its_target(tmp_path, method):
    data = random_tensor_file(tmp_path / "d.pt", n=16)
    train(_cfg(data, method), tmp_path / "run")
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "step"]
    assert len(steps) == 20
    for s, target in enumerate(TARGETS[method]):
        first = sum(abs(r[f"kept{s}"] - target) for r in steps[:4]) / 4
        last = sum(abs(r[f"kept{s}"] - target) for r in steps[-4:]) / 4
        assert last < first - 0.1 and last < 0.15, (method, s, first, last)
    assert all(r["ratio_loss"] >= 0 for r in steps)
    assert ("distill" in steps[0]) == (method == "spvit")  # SPViT distils from the dense model
    saved = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith(f"pruners.{method}.") for k in saved["model"])


@pytest.mark.parametrize("method,extra", [("spvit", ()), ("svit", ()),
                                          # the selectors in their own param groups at 10x lr
                                          ("spvit", ("schedule.selector_lr_scale=10",
                                                     "optim.lr=0.02"))])
def test_pruner_training_resumes_exactly_after_a_kill(tmp_path, method, extra):
    data = random_tensor_file(tmp_path / "d.pt", n=16)
    cfg = _cfg(data, method, "schedule.supervised_epochs=2", "run.ckpt_every_steps=1", *extra)
    straight = tmp_path / "straight"
    train(cfg, straight)
    run = kill_then_resume(cfg, tmp_path, 5)  # mid-epoch 2 (4 steps an epoch)
    assert_same_weights(straight / "model.pt", run / "model.pt")
    if extra:  # every saved optimizer holds the two lrs (the schedule scales both alike)
        files = sorted((run / "checkpoints").glob("*.pt"))
        states = [torch.load(f, map_location="cpu", weights_only=False)["optimizer"] for f in files]
        states = [s for s in states if s]
        assert states
        for state in states:
            groups = state["param_groups"]
            assert sorted({round(g["lr"] / groups[0]["lr"], 6) for g in groups}) == [1.0, 10.0]


def test_recipe_is_a_field_of_the_table_entry_and_config_errors_name_the_key(tmp_path):
    spvit, svit = get_method("spvit").train_recipe, get_method("svit").train_recipe
    assert (spvit.selector, spvit.ratio_weight, spvit.distill_weight) == ("spvit_native", 2.0, 0.5)
    assert spvit.targets(3) == pytest.approx([0.7, 0.49, 0.343])
    assert (svit.selector, svit.distill_weight) == ("svit_native", 0.0)
    assert get_method("spvit_native").train_recipe is spvit
    with pytest.raises(ConfigError, match="schedule.reduction"):
        tiny_config("data.root=x", "schedule.stages=[supervised]", "schedule.reduction=rlt")
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    with pytest.raises(ValueError, match="schedule.reduction=spvit: spvit decides with trained "
                                         "spvit selectors and this model has none"):
        train(tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                          "schedule.stages=[supervised]", "schedule.supervised_epochs=1",
                          "schedule.reduction=spvit"), tmp_path / "run")
    with pytest.raises(ValueError, match="schedule.pruner_targets"):
        train(_cfg(data, "spvit", "schedule.pruner_targets=[0.5]"), tmp_path / "run2")
