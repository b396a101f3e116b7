"""Atomic writes under signals: a preemption signal that arrives during a checkpoint write is held
until the file is complete and renamed, then delivered (in-process; the SLURM version is in
test_slurm_cluster.py)."""
import contextlib
import os
import signal
import threading
import time

import pytest
import torch

import videored.atomic_io as aio
from _engine_utils import assert_same_weights, random_tensor_file, tiny_config, weights
from videored.engine import checkpoint as ckpt
from videored.engine.fault_injection import MARKER
from videored.engine.trainer import train


class Preempted(BaseException):
    """What submitit's USR2 handler does in effect: leave the job from wherever it is."""


@pytest.fixture
def usr2_raises():
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        raise Preempted()

    old = signal.signal(signal.SIGUSR2, handler)
    yield calls
    signal.signal(signal.SIGUSR2, old)


def _state():
    g = torch.Generator().manual_seed(0)
    return {"model": {f"w{i}": torch.randn(64, 64, generator=g) for i in range(8)}, "step": 3,
            "rng": [torch.randn(10, generator=g)]}


def _signal_at(phase, seen):
    def hook(p):
        seen.append(p)
        if p == phase:
            os.kill(os.getpid(), signal.SIGUSR2)
    return hook


@pytest.mark.parametrize("phase", ["start", "middle", "end"])
def test_signal_during_write_is_delivered_after_the_complete_file(tmp_path, usr2_raises, phase, capfd):
    state, seen, path = _state(), [], tmp_path / "ckpt.pt"
    with pytest.raises(Preempted):
        aio.atomic_save(state, path, hook=_signal_at(phase, seen))
    assert seen == ["start", "middle", "end"]  # the write ran to its end despite the signal
    assert usr2_raises == [signal.SIGUSR2]  # delivered exactly once, after the write
    back = torch.load(path, weights_only=True)
    assert back["step"] == 3 and all(torch.equal(back["model"][k], state["model"][k]) for k in state["model"])
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp file left
    assert f"SIGUSR2 arrived while writing {path}" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL  # the test's handler is back


def test_without_deferral_the_same_signal_tears_the_write(tmp_path, usr2_raises, monkeypatch):
    """The control: the hook really fires inside torch.save, which the handler then breaks."""
    monkeypatch.setattr(aio, "signals_deferred", lambda what: contextlib.nullcontext())
    with pytest.raises((Preempted, RuntimeError)):  # torch reports "unexpected pos" as it unwinds
        aio.atomic_save(_state(), tmp_path / "ckpt.pt", hook=_signal_at("middle", []))
    assert not (tmp_path / "ckpt.pt").exists()


def test_text_write_and_writes_off_the_main_thread(tmp_path, usr2_raises):
    aio.atomic_write_text('{"a": 1}', tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text() == '{"a": 1}'
    errors = []

    def save():  # no handlers can be installed off the main thread: a plain atomic write
        try:
            aio.atomic_save(_state(), tmp_path / "t.pt")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=save)
    t.start()
    t.join()
    assert not errors and torch.load(tmp_path / "t.pt", weights_only=True)["step"] == 3


def _signal_on_marker(run_dir):
    """Send SIGUSR2 to this process as soon as the paused write announces itself."""
    def watch():
        deadline = time.monotonic() + 60
        while not (run_dir / MARKER).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR2)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("phase, file", [("start", "checkpoint"), ("middle", "checkpoint"),
                                         ("end", "checkpoint"), ("middle", "model")])
def test_preempted_training_write_resumes_to_the_uninterrupted_weights(tmp_path, usr2_raises, phase, file):
    data = random_tensor_file(tmp_path / "d.pt", n=16)
    args = [f"data.root={data}", "data.kind=tensor_file", "data.batch_size=4", "optim.lr=0.01",
            "schedule.stages=[interpreter, finetune]", "schedule.interpreter_epochs=1",
            "schedule.finetune_epochs=1", "run.ckpt_every_steps=2"]
    reference = train(tiny_config(*args), tmp_path / "ref")

    run = tmp_path / "run"
    paused = tiny_config(*args, f"debug.pause_write_at={phase}", f"debug.pause_write_file={file}",
                         "debug.pause_write_s=0.5")
    watcher = _signal_on_marker(run)
    with pytest.raises(Preempted):
        train(paused, run)
    watcher.join()
    assert usr2_raises == [signal.SIGUSR2]
    if file == "checkpoint":  # the write the signal hit (global step 2) is complete and loads
        newest = ckpt.list_checkpoints(run / "checkpoints")[0]
        assert newest.name == ckpt.checkpoint_name(0, 0, 2)
        assert ckpt.load_checkpoint(newest)["position"]["global_step"] == 2
        assert not (run / "model.pt").exists()
    else:  # the final model file is complete; the resumed run rewrites it and summary.json
        assert torch.load(run / "model.pt", weights_only=True)["model"].keys() == weights(tmp_path / "ref" / "model.pt").keys()

    resumed = train(paused, run, resume="auto")  # the marker is there: this time no pause
    assert resumed == reference
    assert_same_weights(tmp_path / "ref" / "model.pt", run / "model.pt")
