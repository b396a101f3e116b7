"""2-process gloo DDP (torchrun-style environment, the real `videored train` command) equals one
process at the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch

from _engine_utils import REPO, free_port, random_tensor_file, tiny_config, weights
from videored.engine.config import save_config
from videored.engine.trainer import train


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path):
    data = random_tensor_file(tmp_path / "d.pt", n=16)
    # D=2. Plan: supervised -> finetune group 1 -> interpreter group 1. The first two are
    # deterministic and must agree across world sizes; the interpreter stage samples per rank,
    # so there only the frozen backbone must stay identical.
    common = [f"data.root={data}", "data.kind=tensor_file", "model.groups=2", "model.depth=4",
              "schedule.stages=[supervised, finetune, interpreter]", "schedule.groups=[1]",
              "schedule.supervised_epochs=2", "schedule.finetune_epochs=1",
              "schedule.interpreter_epochs=1", "optim.name=sgd", "optim.lr=0.05",
              "optim.clip_grad=0.5", "run.ckpt_every_steps=3"]
    single = train(tiny_config(*common, "data.batch_size=4"), tmp_path / "one")

    cfg2 = tiny_config(*common, "data.batch_size=2")  # 2 processes x 2 = global batch 4
    config = tmp_path / "two.yaml"
    save_config(cfg2, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    procs = [subprocess.Popen([sys.executable, "-m", "videored.cli", "train", "--config", str(config),
                               "--out", str(tmp_path / "two")], cwd=REPO,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]

    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and two["global_steps"] == single["global_steps"] == 16
    w1, w2 = weights(tmp_path / "one" / "model.pt"), weights(tmp_path / "two" / "model.pt")
    interp = [k for k in w1 if k.startswith("interpreters.1.")]
    assert all(torch.isfinite(w2[k]).all() for k in interp)
    assert any(not torch.equal(w1[k], w2[k]) for k in interp)  # trained on per-rank samples
    for k in w1:
        if k not in interp:
            assert torch.allclose(w1[k], w2[k], atol=1e-6, rtol=1e-5), k
    # the per-stage training metrics were averaged over both ranks
    for a, b in zip(single["stages"][:2], two["stages"][:2]):
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-5)


def test_two_processes_refuse_a_folder_holding_a_run_together(tmp_path):
    """Rank 0 checks the folder and holds the lock; every rank gets its verdict (no rank waits
    forever at the next collective) and exits with the same one-line error."""
    data = random_tensor_file(tmp_path / "d.pt", n=8)
    cfg = tiny_config(f"data.root={data}", "data.kind=tensor_file", "data.batch_size=2",
                      "schedule.stages=[supervised]", "schedule.supervised_epochs=1")
    train(cfg, tmp_path / "run")
    before = (tmp_path / "run" / "model.pt").read_bytes()
    config = tmp_path / "two.yaml"
    save_config(cfg, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                "OMP_NUM_THREADS": "1"})
    procs = [subprocess.Popen([sys.executable, "-m", "videored.cli", "train", "--config", str(config),
                               "--out", str(tmp_path / "run")], cwd=REPO,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 2 and "already holds a run" in err and "Traceback" not in err, err[-2000:]
    assert (tmp_path / "run" / "model.pt").read_bytes() == before
    assert not (tmp_path / "run" / "run.lock").exists()
