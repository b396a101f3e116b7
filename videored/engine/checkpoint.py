"""The checkpointer: the one schema of a training checkpoint, writing it atomically, finding the
newest one that loads for `--resume auto`, pruning, and RNG state capture.

A checkpoint is one `torch.save`d dict, the fields of `TrainingState` plus `format_version`; the
keys a file must hold are derived from the dataclass (`required_keys`), so the schema is written
down once. Its file name encodes the training position it resumes from,
`ckpt_s{stage}_e{epoch}_i{step}.pt` (zero padded), so names sort in training order. Files are
read through `videored.torch_io.load_torch_file`, the one reader of `.pt` files.
"""
from __future__ import annotations

import random
import re
import warnings
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from omegaconf import DictConfig
from torch import nn

from videored.atomic_io import WriteHook, atomic_save
from videored.torch_io import load_torch_file

from .config import config_changes, shape_changes
from .distributed import DistInfo, all_gather_object, barrier

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_s(\d+)_e(\d+)_i(\d+)\.pt$")


class NoUsableCheckpointError(RuntimeError):
    """Checkpoints exist but none loads: resuming would silently restart from step 0."""


class ResumeConfigError(ValueError):
    """The checkpoint cannot resume under this config (model/data shape changed)."""


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
    stage_updates  optimizer steps (not skipped) so far in the current stage (absent before: 0)
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
    stage_updates: int = 0  # optimizer steps taken so far in the current stage

    def as_dict(self) -> dict[str, Any]:
        """The dict written to disk (shallow: tensors are not copied)."""
        return {"format_version": FORMAT_VERSION,
                **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, state: Any, source: str = "checkpoint") -> "TrainingState":
        """Check a loaded dict against the schema (a ValueError naming `source` and the missing
        keys) and wrap it; fields with a default may be absent (older files)."""
        if not isinstance(state, dict):
            raise ValueError(f"{source}: not a videored training checkpoint (holds a "
                             f"{type(state).__name__}, not a dict)")
        missing = [k for k in required_keys() if k not in state]
        if missing:
            raise ValueError(f"{source}: not a videored training checkpoint (missing keys "
                             f"{', '.join(missing)})")
        if state["format_version"] != FORMAT_VERSION:
            raise ValueError(f"{source}: checkpoint format {state['format_version']} != {FORMAT_VERSION}")
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def required_keys() -> list[str]:
    """The keys every checkpoint file holds: `format_version` and each TrainingState field
    without a default (fields added later get a default so that older files still resume)."""
    return ["format_version"] + [f.name for f in fields(TrainingState)
                                 if f.default is MISSING and f.default_factory is MISSING]


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
    """Load one checkpoint and check it against the schema; a ValueError whose one line names
    the file and the reason if it is unusable."""
    path = Path(path)
    state = load_torch_file(path, what="checkpoint")  # UnreadableFileError is a ValueError
    TrainingState.from_dict(state, str(path))
    return state


def find_latest(folder: str | Path) -> Optional[tuple[Path, dict]]:
    """The newest checkpoint in `folder` that loads (unreadable newer ones are skipped with a
    warning); None when the folder holds no checkpoint. When it holds some and none loads this is
    a NoUsableCheckpointError naming each file and why: a requeued job must never quietly start
    over (and overwrite them)."""
    failures = []
    for path in list_checkpoints(folder):
        try:
            return path, load_checkpoint(path)
        except ValueError as err:
            failures.append(str(err))
            warnings.warn(f"skipping checkpoint: {err}", stacklevel=2)
    if failures:
        raise NoUsableCheckpointError(
            f"{folder}: none of its {len(failures)} checkpoints loads, so the run cannot resume: "
            + " | ".join(failures) + ". Restore a good file there, resume from one with "
            "--resume PATH, or start over on purpose with --resume fresh (the old files are kept "
            "under <out>/replaced/)")
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


def resumable_changes(stored: dict, cfg: DictConfig, source: str) -> dict[str, tuple[Any, Any]]:
    """The config changes between a checkpoint's config and `cfg` ({key: (before, after)});
    a ResumeConfigError naming the keys when one fixes the model/data shape."""
    changes = config_changes(stored, cfg)
    fixed = shape_changes(changes)
    if fixed:
        raise ResumeConfigError(
            f"{source}: cannot resume with a different model/data shape: "
            + "; ".join(f"{k} was {changes[k][0]!r}, now {changes[k][1]!r}" for k in fixed)
            + ". Undo these overrides, or start a new run with another --out")
    return changes


def resolve_resume(resume: Optional[str], run_dir: str | Path) -> Optional[tuple[Path, dict]]:
    """`auto`: the newest valid checkpoint in <run>/checkpoints (None if there is none; a
    NoUsableCheckpointError naming each file if there are some and none loads);
    a path: that checkpoint (an unreadable one is an error); None or `fresh`: start fresh."""
    if resume is None or resume == "fresh":
        return None
    if resume == "auto":
        return find_latest(Path(run_dir) / "checkpoints")
    return Path(resume), load_checkpoint(resume)


class Checkpointer:
    """Save and resume of one run, in `folder` (<run>/checkpoints).

    `save` gathers every rank's part (RNG states, running sums), and rank 0 writes the loop's
    `TrainingState` atomically under its position's name and prunes to the newest `keep`.
    `restore` checks a stored state against this run (config, stage plan, weights) and loads the
    weights; its optimizer, scheduler and RNG parts belong to the stage being resumed, so the loop
    takes them with `resume_stage` once it has built that stage's optimizer.
    """

    def __init__(self, folder: Path, keep: int, dist: DistInfo,
                 hook: Callable[[], Optional[WriteHook]] = lambda: None) -> None:
        self.folder, self.keep, self.dist, self.hook = Path(folder), keep, dist, hook
        self._pending: Optional[TrainingState] = None

    def save(self, position: tuple[int, int, int], rank_state: dict,
             build: Callable[[list[dict]], TrainingState]) -> None:
        """position: (stage, epoch, step) it resumes from; rank_state: this rank's part;
        build(rank_states): the state to write (called on rank 0 only). Every rank calls this."""
        rank_states = all_gather_object(rank_state)
        if self.dist.is_main:
            atomic_save(build(rank_states).as_dict(), self.folder / checkpoint_name(*position),
                        hook=self.hook())
            prune(self.folder, self.keep)
        barrier()

    def restore(self, state: dict, source: str, *, cfg: DictConfig, model: nn.Module,
                plan: list[tuple[str, int, int]], batch_size: int
                ) -> tuple[TrainingState, dict[str, tuple[Any, Any]]]:
        """Check `state` (a loaded checkpoint) against this run and load its weights into
        `model`; returns it with the config changes ({key: (before, after)}, none of a shape key).
        plan: the run's stages as (kind, group, epochs)."""
        saved = TrainingState.from_dict(state, source)
        changes = resumable_changes(saved.config, cfg, source)
        stored = [(s["kind"], s["group"], s["epochs"]) for s in saved.plan]
        if stored != plan:
            raise ValueError(f"{source}: its stage plan {stored} differs from this config's {plan}")
        saved_clips = saved.config.get("data", {}).get("clips_per_video", 1)
        clips, world = cfg.data.clips_per_video, self.dist.world_size
        if (saved.world_size, saved.batch_size, saved_clips) != (world, batch_size, clips):
            warnings.warn(f"{source}: saved with {saved.world_size} processes x batch "
                          f"{saved.batch_size} ({saved_clips} clips per video), resuming with "
                          f"{world} x {batch_size} ({clips} clips per video): "
                          "the data order after resume is not the uninterrupted one", stacklevel=3)
        try:
            model.load_state_dict(saved.model)
        except RuntimeError as err:  # e.g. a model.kwargs change the key list cannot see
            first = " ".join(x.strip() for x in str(err).splitlines()[:3])
            raise ResumeConfigError(f"{source}: its weights do not fit this config's model: "
                                    f"{first[:400]}") from None
        self._pending = saved
        return saved, changes

    def resume_stage(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> Optional[dict]:
        """At the first stage after `restore`: load the optimizer / scheduler (mid-stage) and this
        rank's RNG states; returns this rank's other parts ({"meter", "substitutions"}) when the
        world size is the saved one, else None (also when nothing is pending)."""
        saved, self._pending = self._pending, None
        if saved is None:
            return None
        if saved.optimizer is not None:
            optimizer.load_state_dict(saved.optimizer)
            scheduler.load_state_dict(saved.scheduler)
        if len(saved.rank_states) != self.dist.world_size:
            return None
        mine = saved.rank_states[self.dist.rank]
        set_rng_state(mine["rng"])
        return mine
