"""EViT's finetune recipe through the training engine: a supervised stage trained through EViT,
its keep rate warmed up along the cosine of `warmup_keep_ratio`, validated at the target."""
import math

import pytest

from _engine_utils import random_tensor_file, tiny_config
from videored.engine.config import ConfigError
from videored.engine.metrics_log import read_metrics
from videored.engine.trainer import train
from videored.models.evit import warmup_keep_ratio


def test_warmup_keep_ratio_is_a_cosine_on_the_per_stage_rate():
    assert warmup_keep_ratio(-0.5, 0.343, 3) == 1.0 and warmup_keep_ratio(0.0, 0.343, 3) == 1.0
    assert warmup_keep_ratio(1.0, 0.343, 3) == pytest.approx(0.343)
    assert warmup_keep_ratio(2.0, 0.343, 3) == pytest.approx(0.343)
    rate = 0.7 + 0.3 * 0.5 * (1 + math.cos(math.pi * 0.25))  # per-stage rate a quarter in
    assert warmup_keep_ratio(0.25, 0.7 ** 3, 3) == pytest.approx(rate ** 3)


def test_supervised_stage_trains_through_evit_with_warmup(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=16)
    # 4 steps per epoch; keep everything for 1 epoch, reach the target at the end of epoch 2
    cfg = tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4",
                      "data.val_split=train", "schedule.stages=[supervised]",
                      "schedule.supervised_epochs=3", "schedule.reduction=evit",
                      "schedule.keep_ratio=0.25", "schedule.keep_warmup_epochs=[1, 2]",
                      "run.log_every=1", "optim.lr=0.01")
    train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    steps = [r for r in rows if r["kind"] == "step"]
    kept = [r["kept"] for r in steps]
    # N = 8 patches, EViT stages at blocks 0 and 1: keep 1 -> 8 rows; the target 0.25 keeps
    # 2 attentive rows + the fused token. An attentive row is a patch or the first stage's fused
    # token, so 2 or 1 patches are kept: the batch mean is between 1/8 and 2/8.
    gflops = [r["gflops"] for r in steps]
    assert kept[:4] == [1.0] * 4 and len(set(gflops[:4])) == 1
    assert all(0.125 <= k <= 0.25 for k in kept[-4:]) and len(set(gflops[-4:])) == 1
    assert all(a >= b for a, b in zip(gflops, gflops[1:]))  # cost falls during the warm-up
    assert gflops[-1] < gflops[6] < gflops[0]  # step 7: halfway through the warm-up
    val = [r for r in rows if r["kind"] == "val"][-1]
    assert 0.125 <= val["kept"] <= 0.25 and val["samples"] == 16
    assert val["gflops"] == pytest.approx(gflops[-1])  # validated at the target


def test_reduction_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="schedule.reduction"):
        tiny_config("data.root=x", "schedule.reduction=tome")
    with pytest.raises(ConfigError, match="schedule.reduction"):
        tiny_config("data.root=x", "schedule.reduction=evit")  # with interpreter stages
    with pytest.raises(ConfigError, match="schedule.keep_warmup_epochs"):
        tiny_config("data.root=x", "schedule.stages=[supervised]", "schedule.reduction=evit",
                    "schedule.keep_warmup_epochs=[3, 1]")
