"""Helpers shared by the engine tests: a tiny JointST config and datasets with a known answer."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from videored.engine.config import load_config

REPO = Path(__file__).resolve().parents[1]

# 2 frames of 32x32, 16x16 patches: grid (2, 2, 2), N = 8 patch tokens; width 32, 2 heads.
TINY = [
    "model.name=timesformer_jointst_tiny_patch16_224", "model.num_classes=4", "model.img_size=32",
    "model.num_frames=2", "model.depth=2", "model.kwargs={embed_dim: 32, num_heads: 2}",
    "data.num_workers=0", "run.progress=false", "run.log_every=2",
]


def tiny_config(*overrides: str):
    return load_config(None, TINY + list(overrides))


def random_tensor_file(path: Path, n: int = 24, seed: int = 0, nan_rows: tuple[int, ...] = ()) -> Path:
    """Noise clips (n, 3, 2, 32, 32) with random labels in 0..3 saved as a tensor_file dataset."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 2, 32, 32, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    for i in nan_rows:
        x[i] = float("nan")
    torch.save({"x": x, "y": y}, path)
    return path


class PatchCodeDataset(Dataset):
    """Toy task with a known answer. Clips (3, 2, 32, 32) = 8 patch tokens of low-amplitude noise,
    except patches 1 and 6 (frame 0 top-right, frame 1 bottom-left), which show one of 2 fixed
    patterns each: bits a and b; the label is 2a + b. No other patch carries information.

    fixed_seed=None draws fresh noise from the global RNG each time (no memorizing the noise);
    an integer makes item i a fixed function of (fixed_seed, i).
    """

    INFORMATIVE = (1, 6)

    def __init__(self, n: int, fixed_seed: int | None = None) -> None:
        self.n, self.fixed = n, fixed_seed
        self.patterns = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 4 - 2

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = None if self.fixed is None else torch.Generator().manual_seed(self.fixed * 100_003 + i)
        x = (torch.rand(3, 2, 32, 32, generator=g) * 2 - 1) * 0.5
        bits = torch.randint(0, 2, (2,), generator=g)
        for which, n in enumerate(self.INFORMATIVE):
            t, r, c = n // 4, (n % 4) // 2, n % 2  # patch n <-> frame n // g², row, col
            x[:, t, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = self.patterns[which, bits[which]]
        return {"video": x, "label": int(2 * bits[0] + bits[1])}


def run_cli(args: list[str], env_extra: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python -m videored.cli ...` in a subprocess with one torch thread (bitwise-comparable)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env_extra or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        if env_extra is None or key not in env_extra:
            env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "videored.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def kill_then_resume(cfg, tmp_path: Path, kill_after_steps: int, *overrides: str) -> Path:
    """`videored train` on cfg (saved to tmp_path/exp.yaml) into tmp_path/run, hard-killed after
    kill_after_steps steps, then run again with `--resume auto`; returns the run folder once
    the resumed run has finished. The resume must start mid-epoch (checkpoint step 1)."""
    from videored.engine.config import save_config

    config = tmp_path / "exp.yaml"
    save_config(cfg, config)
    run = tmp_path / "run"
    base = ["train", "--config", str(config), "--out", str(run), *overrides]
    killed = run_cli(base + [f"debug.kill_after_steps={kill_after_steps}"])
    assert killed.returncode == 17, killed.stderr[-2000:]
    resumed = run_cli(base + ["--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "'step': 1" in resumed.stdout  # mid-epoch
    return run


def assert_same_weights(a: Path, b: Path) -> None:
    """Two model.pt files hold bit-identical weights."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's rendezvous in tests run side by side)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
