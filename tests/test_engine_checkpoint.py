"""Checkpoint files (atomic, newest valid first), RNG capture, the resumable sampler, env parsing."""
import random
import warnings

import numpy as np
import pytest
import torch

from videored.engine import checkpoint as ckpt
from videored.engine.distributed import read_env
from videored.engine.sampler import ResumableSampler


def _state(tag: int) -> dict:
    """A complete checkpoint dict (every schema field), told apart by its weight `w`."""
    return ckpt.TrainingState(
        model={"w": torch.full((2,), float(tag))}, optimizer=None, scheduler=None,
        position={"stage": 0, "epoch": 0, "step": 0, "global_step": 0}, plan=[], sampler={},
        rank_states=[], nonfinite=0, summary=[], world_size=1, batch_size=1, config={}).as_dict()


def test_names_sort_in_training_order_and_prune(tmp_path):
    positions = [(0, 0, 5), (0, 1, 0), (1, 0, 0), (0, 0, 10), (1, 0, 3)]
    for i, p in enumerate(positions):
        ckpt.atomic_save(_state(i), tmp_path / ckpt.checkpoint_name(*p))
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == [ckpt.checkpoint_name(*p) for p in [(1, 0, 3), (1, 0, 0), (0, 1, 0), (0, 0, 10), (0, 0, 5)]]
    ckpt.prune(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == names[:2]


def test_torn_newest_checkpoint_is_skipped_with_warning(tmp_path):
    ckpt.atomic_save(_state(1), tmp_path / ckpt.checkpoint_name(0, 0, 4))
    good = tmp_path / ckpt.checkpoint_name(0, 0, 8)
    ckpt.atomic_save(_state(2), good)
    torn = tmp_path / ckpt.checkpoint_name(0, 0, 12)
    torn.write_bytes(good.read_bytes()[:100])  # a write cut short
    with pytest.warns(UserWarning, match="skipping checkpoint.*i00000012"):
        path, state = ckpt.find_latest(tmp_path)
    assert path == good and state["model"]["w"][0] == 2
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(torn)
    (tmp_path / "other.pt").write_bytes(b"x")  # not matching the name pattern: ignored
    assert ckpt.find_latest(tmp_path / "missing") is None


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "c.pt"

    def boom(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.atomic_save(_state(0), target)
    assert list(tmp_path.iterdir()) == []


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    ckpt.atomic_save({"rng": ckpt.rng_state()}, tmp_path / "r.pt")
    first = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_sampler_skip_and_sharding():
    data = list(range(20))
    one = ResumableSampler(data, num_replicas=1, rank=0, seed=3)
    one.set_position(epoch=5)
    order = list(one)
    assert sorted(order) == data and order != data  # a permutation
    one.set_position(epoch=5, skip=8)
    assert list(one) == order[8:] and len(one) == 12
    # two ranks with batch 2 == one process with batch 4, step by step
    r0, r1 = (ResumableSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1))
    for s in (r0, r1):
        s.set_position(epoch=5)
    a, b = list(r0), list(r1)
    for step in range(5):
        assert sorted(a[2 * step:2 * step + 2] + b[2 * step:2 * step + 2]) == sorted(order[4 * step:4 * step + 4])


def test_read_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
              "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_LAUNCH_NODE_IPADDR"):
        monkeypatch.setenv(k, "0")  # recorded, so whatever read_env sets is undone afterwards
        monkeypatch.delenv(k)
    assert read_env() == (0, 1, 0)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    assert read_env() == (3, 4, 1)
    import os
    assert os.environ["MASTER_PORT"] == str(20000 + 1234) and os.environ["MASTER_ADDR"]
    monkeypatch.setenv("RANK", "1")  # torchrun variables win over SLURM's
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert read_env() == (1, 2, 1)
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one'"):
        read_env()


def test_schema_is_the_dataclass_and_older_files_still_load(tmp_path):
    # the required keys are the fields without a default, written down nowhere else
    assert ckpt.required_keys() == ["format_version", "model", "optimizer", "scheduler", "position",
                                    "plan", "sampler", "rank_states", "nonfinite", "summary",
                                    "world_size", "batch_size", "config"]
    older = _state(3)
    del older["substitutions"], older["stage_updates"]  # fields added after format 1 shipped
    ckpt.atomic_save(older, tmp_path / "old.pt")
    state = ckpt.TrainingState.from_dict(ckpt.load_checkpoint(tmp_path / "old.pt"))
    assert state.substitutions == [] and state.stage_updates == 0
    broken = _state(4)
    del broken["optimizer"], broken["plan"]
    ckpt.atomic_save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"broken\.pt: not a videored training checkpoint "
                                         r"\(missing keys optimizer, plan\)"):
        ckpt.load_checkpoint(tmp_path / "broken.pt")
