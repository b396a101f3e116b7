"""Training checkpoints: atomic writes, newest-valid lookup for `--resume auto`, RNG state capture.

A checkpoint is one `torch.save`d dict, the fields of `TrainingState` (this file owns the
schema) plus `format_version`. Its file name encodes the training position it resumes from,
`ckpt_s{stage}_e{epoch}_i{step}.pt` (zero padded), so names sort in training order.
"""
from __future__ import annotations

import random
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from videored.atomic_io import atomic_save  # noqa: F401  (re-exported: ckpt.atomic_save)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_s(\d+)_e(\d+)_i(\d+)\.pt$")
REQUIRED_KEYS = ("format_version", "model", "position", "config")


@dataclass
class TrainingState:
    """Everything a run needs to resume exactly (plain containers and tensors only, so
    `torch.load(weights_only=True)` reads it).

    position     {"stage", "epoch", "step", "global_step"}: the next step to run
    plan         the stage list [{"index", "kind", "group", "epochs"}] (must match on resume)
    optimizer / scheduler  state dicts mid-stage; None at a stage boundary
    sampler      {"seed", "epoch_key", "consumed_per_rank"} (informative: the order is a pure
                 function of seed, stage and epoch)
    rank_states  per rank {"rng": rng_state(), "meter": running epoch sums}
    nonfinite    skipped non-finite steps so far;  summary  finished stages' rows
    world_size / batch_size  of the run that saved it;  config  the resolved experiment config
    substitutions  per finished epoch, the bad videos replaced by substitutes (absent before: [])
    """
    model: dict
    optimizer: Optional[dict]
    scheduler: Optional[dict]
    position: dict
    plan: list
    sampler: dict
    rank_states: list
    nonfinite: int
    summary: list
    world_size: int
    batch_size: int
    config: dict
    substitutions: list = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The dict written to disk (shallow: tensors are not copied)."""
        return {"format_version": FORMAT_VERSION,
                **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, state: dict, source: str = "checkpoint") -> "TrainingState":
        optional = {"substitutions"}  # added later; older checkpoints resume with none recorded
        missing = [f.name for f in fields(cls) if f.name not in state and f.name not in optional]
        if missing:
            raise ValueError(f"{source}: not a resumable training checkpoint (missing {missing})")
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def checkpoint_name(stage: int, epoch: int, step: int) -> str:
    return f"ckpt_s{stage:03d}_e{epoch:04d}_i{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in `folder`, newest training position first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(tuple(int(g) for g in m.groups()), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: str | Path) -> dict:
    """Load and sanity-check one checkpoint; raises ValueError naming the file if it is unusable."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torn/truncated/garbage files raise assorted errors
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise ValueError(f"{path}: not a videored training checkpoint (missing keys)")
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state['format_version']} != {FORMAT_VERSION}")
    return state


def find_latest(folder: str | Path) -> Optional[tuple[Path, dict]]:
    """The newest checkpoint in `folder` that loads; unreadable ones are skipped with a warning."""
    for path in list_checkpoints(folder):
        try:
            return path, load_checkpoint(path)
        except ValueError as err:
            warnings.warn(f"skipping checkpoint: {err}", stacklevel=2)
    return None


def prune(folder: str | Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints (keep <= 0 keeps everything)."""
    if keep > 0:
        for path in list_checkpoints(folder)[keep:]:
            path.unlink(missing_ok=True)


def rng_state() -> dict:
    """This process's python, numpy, torch (and CUDA when present) RNG states."""
    # Stored as tensors and plain tuples so `torch.load(weights_only=True)` can read the file.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
