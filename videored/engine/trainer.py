"""The Algorithm-1 stage loop: stages -> epochs -> steps, with exact resume, DDP and logging.

Training position = (stage, epoch, step): the next step to run. A checkpoint stores it with the
model, optimizer, scheduler, every rank's RNG states and running epoch sums, so a run resumed
from it replays the remaining steps exactly: the sampler's order is a pure function of
(seed, stage, epoch) and skips the samples already consumed.
"""
from __future__ import annotations

import gc
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from videored.models.methods import get_method
from videored.atomic_io import atomic_write_text

from . import checkpoint as ckpt
from .builders import build_optimizer, build_scheduler, loader_workers, stage_lr, unpack_batch
from .config import save_config, to_dict
from .distributed import DistInfo, all_gather_object, all_reduce_sum, any_rank, barrier
from .fault_injection import write_pause_hook
from .metrics_log import MetricsLogger
from .sampler import ResumableSampler
from .substitutions import SubstitutionTally
from .stages import (Stage, StepResult, classification_step, dense_teacher, interpreter_step,
                     plan_stages, pruner_step, pruner_training,
                     set_train_mode, trainable_parameters)
from .validation import validate


class NonFiniteLossError(RuntimeError):
    """Too many steps had a non-finite loss or gradient (see run.max_nonfinite)."""


@dataclass
class Position:
    stage: int = 0
    epoch: int = 0
    step: int = 0  # step within the epoch
    global_step: int = 0


class Meter:
    """Sums of per-sample metrics and the sample count; averaged across ranks on read.

    Sums stay tensors on the training device so adding a step does not synchronize the GPU.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, result: StepResult) -> None:
        for k, v in result.sums.items():
            v = v.detach().double()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += result.count

    def global_means(self, device: torch.device) -> tuple[dict[str, float], int]:
        keys = sorted(self.sums)
        parts = [self.sums[k].to(device).reshape(1) for k in keys]
        t = torch.cat(parts + [torch.tensor([float(self.count)], dtype=torch.float64, device=device)])
        all_reduce_sum(t)  # every rank must call this at the same point
        n = t[-1].item()
        return {k: t[i].item() / max(n, 1.0) for i, k in enumerate(keys)}, int(n)

    def state(self) -> dict:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count}

    def load(self, state: dict) -> None:
        self.sums = {k: torch.tensor(v, dtype=torch.float64) for k, v in state["sums"].items()}
        self.count = int(state["count"])


class Trainer:
    def __init__(self, cfg: DictConfig, out_dir: str | Path, dist: DistInfo, model: nn.Module,
                 train_set: Dataset, val_set: Optional[Dataset] = None) -> None:
        self.cfg, self.dist = cfg, dist
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.model = model.to(dist.device)
        self.train_set, self.val_set = train_set, val_set
        self.plan = plan_stages(cfg, model.groups)
        self.pos = Position()
        self.nonfinite = 0
        self.summary: list[dict] = []
        self.epoch_meter = Meter()
        self.amp = dist.device.type == "cuda" and cfg.run.precision == "bf16"
        self.batch = cfg.data.batch_size  # clips a step, per process (what the model sees)
        # an item is one video with data.clips_per_video clips: the sampler, the loader and the
        # resume position count videos
        clips, given = cfg.data.clips_per_video, getattr(train_set, "clips_per_video", 1)
        if given != clips:
            raise ValueError(f"data.clips_per_video={clips} but the training set gives {given} clips per item")
        self.videos_per_step = self.batch // clips
        self.sampler = ResumableSampler(train_set, num_replicas=dist.world_size, rank=dist.rank,
                                        shuffle=True, seed=cfg.run.seed, drop_last=True)
        self.loader_gen = torch.Generator()
        self.loader = DataLoader(train_set, batch_size=self.videos_per_step, sampler=self.sampler,
                                 drop_last=True, pin_memory=dist.device.type == "cuda",
                                 generator=self.loader_gen, persistent_workers=False,
                                 **loader_workers(cfg))
        full = self.sampler.num_samples // self.videos_per_step
        cap = cfg.schedule.max_steps_per_epoch
        self.steps_per_epoch = min(full, cap) if cap else full
        if self.steps_per_epoch < 1:
            raise ValueError(f"training set of {len(train_set)} samples gives no full batch of "
                             f"{self.videos_per_step} per process x {dist.world_size} processes")
        self.subs = SubstitutionTally(cfg.data.max_bad_fraction,
                                      self.steps_per_epoch * self.videos_per_step * dist.world_size)
        self.log = MetricsLogger(self.out, enabled=dist.is_main)
        self._resume_state: Optional[ckpt.TrainingState] = None
        # a learned pruner's recipe (SPViT / SViT) and its teacher: the starting weights, copied
        # before a resume loads newer ones
        self.pruning = pruner_training(cfg, self.model)
        self.teacher = dense_teacher(self.model, self.pruning)

    # ---- resume ----
    def load_state(self, state: dict, source: str) -> None:
        """Restore from a checkpoint dict (`ckpt.TrainingState` fields); the RNG and optimizer
        parts apply when the loop reaches the saved position."""
        saved = ckpt.TrainingState.from_dict(state, source)
        stored = [(s["kind"], s["group"], s["epochs"]) for s in saved.plan]
        current = [(s.kind, s.group, s.epochs) for s in self.plan]
        if stored != current:
            raise ValueError(f"{source}: its stage plan {stored} differs from this config's {current}")
        saved_clips = saved.config.get("data", {}).get("clips_per_video", 1)
        clips = self.cfg.data.clips_per_video
        if (saved.world_size, saved.batch_size, saved_clips) != (self.dist.world_size, self.batch, clips):
            warnings.warn(f"{source}: saved with {saved.world_size} processes x batch "
                          f"{saved.batch_size} ({saved_clips} clips per video), resuming with "
                          f"{self.dist.world_size} x {self.batch} ({clips} clips per video): "
                          "the data order after resume is not the uninterrupted one", stacklevel=2)
        self.model.load_state_dict(saved.model)
        self.pos = Position(**saved.position)
        self.nonfinite = saved.nonfinite
        self.summary = list(saved.summary)
        self.subs.epochs = list(saved.substitutions)
        self._resume_state = saved
        self.log.rewind(self.pos.global_step, source)  # metrics.jsonl: no step logged twice

    def _apply_resume(self, optimizer, scheduler) -> None:
        """Optimizer/scheduler (mid-stage), running sums (mid-epoch) and this rank's RNG states."""
        saved, self._resume_state = self._resume_state, None
        if saved is None:
            return
        if saved.optimizer is not None:
            optimizer.load_state_dict(saved.optimizer)
            scheduler.load_state_dict(saved.scheduler)
        ranks = saved.rank_states
        if len(ranks) == self.dist.world_size:
            ckpt.set_rng_state(ranks[self.dist.rank]["rng"])
            self.epoch_meter.load(ranks[self.dist.rank]["meter"])
            if "substitutions" in ranks[self.dist.rank]:
                self.subs.load_rank_state(ranks[self.dist.rank]["substitutions"])

    # ---- checkpoints ----
    def _save(self, optimizer=None, scheduler=None) -> None:
        rank_states = all_gather_object({"rng": ckpt.rng_state(), "meter": self.epoch_meter.state(),
                                         "substitutions": self.subs.rank_state()})
        if self.dist.is_main:
            p = self.pos
            state = ckpt.TrainingState(
                model=self.model.state_dict(),
                optimizer=optimizer.state_dict() if optimizer is not None else None,
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                position=vars(p).copy(),
                plan=[vars(s).copy() for s in self.plan],
                sampler={"seed": self.cfg.run.seed, "epoch_key": self._epoch_key(p.stage, p.epoch),
                         "consumed_per_rank": p.step * self.videos_per_step},
                rank_states=rank_states, nonfinite=self.nonfinite, summary=self.summary,
                substitutions=self.subs.epochs,
                world_size=self.dist.world_size, batch_size=self.batch, config=to_dict(self.cfg))
            ckpt.atomic_save(state.as_dict(),
                             self.ckpt_dir / ckpt.checkpoint_name(p.stage, p.epoch, p.step),
                             hook=write_pause_hook(self.cfg.debug, self.out, "checkpoint"))
            ckpt.prune(self.ckpt_dir, self.cfg.run.keep_checkpoints)
        barrier()

    # ---- the loop ----
    def run(self) -> dict:
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        try:
            for stage in self.plan[self.pos.stage:]:
                self._run_stage(stage)
        finally:
            self.log.close()
        return self._finish()

    def _epoch_key(self, stage: int, epoch: int) -> int:
        return stage * 100_003 + epoch  # a distinct sampler permutation per (stage, epoch)

    def _run_stage(self, stage: Stage) -> None:
        params = trainable_parameters(self.model, stage)
        global_batch = self.batch * self.dist.world_size
        lr = stage_lr(self.cfg, stage.kind, global_batch)
        optimizer = build_optimizer(self.model, params, self.cfg, lr, stage.kind)
        total = stage.epochs * self.steps_per_epoch
        scheduler = build_scheduler(optimizer, self.cfg, total, self.steps_per_epoch)
        net = self.model
        if self.dist.enabled:  # DDP over the stage's trainable parameters only (frozen ones ignored)
            ids = [self.dist.local_rank] if self.dist.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=ids)
        self._apply_resume(optimizer, scheduler)
        set_train_mode(self.model, stage)
        for epoch in range(self.pos.epoch, stage.epochs):
            self._run_epoch(stage, epoch, net, params, optimizer, scheduler)
            train_means, _ = self.epoch_meter.global_means(self.dist.device)
            subs = self.subs.end_epoch(stage.name, epoch, self.dist.device)
            self.log.log({"kind": "epoch", "stage": stage.name, "epoch": epoch,
                          "global_step": self.pos.global_step, **train_means,
                          "items": subs["items"], "substituted": subs["substituted"],
                          "bad_videos": subs["bad_videos"]}, self.pos.global_step)
            self.subs.check_epoch(subs)
            self.epoch_meter = Meter()
            last = epoch + 1 == stage.epochs
            if last:
                self._end_stage(stage, train_means)
                self.pos = Position(stage.index + 1, 0, 0, self.pos.global_step)
                self._save()
            else:
                self.pos = Position(stage.index, epoch + 1, 0, self.pos.global_step)
                self._save(optimizer, scheduler)
        del net  # frees the DDP reducer and its gradient hooks before the next stage wraps again
        gc.collect()

    def _end_stage(self, stage: Stage, train_means: dict) -> None:
        row: dict[str, Any] = {"stage": stage.name, "kind": stage.kind, "group": stage.group,
                               "epochs": stage.epochs, "global_step": self.pos.global_step,
                               "train": train_means}
        if self.val_set is not None:
            row["val"] = validate(self.model, self.val_set, stage.active_groups, self.dist,
                                  self.batch, loader_workers(self.cfg), self.amp,
                                  **self._reduction(stage, warmed_up=True))
            self.log.log({"kind": "val", "stage": stage.name, **row["val"]}, self.pos.global_step)
            set_train_mode(self.model, stage)
        self.summary.append(row)

    def _run_epoch(self, stage: Stage, epoch: int, net: nn.Module, params: list,
                   optimizer, scheduler) -> None:
        start = self.pos.step
        key = self._epoch_key(stage.index, epoch)
        self.sampler.set_position(key, skip=start * self.videos_per_step)
        epoch_seed = self.cfg.run.seed * 1_000_003 + key
        self.loader_gen.manual_seed(epoch_seed)  # worker seeds
        if hasattr(self.train_set, "set_epoch_seed"):  # item i's augmentation from (epoch, i)
            self.train_set.set_epoch_seed(epoch_seed)
        window, t0 = Meter(), time.perf_counter()
        bar = self._progress(stage, epoch, start)
        for step, batch in zip(range(start, self.steps_per_epoch), self._batches(start)):
            self.subs.add(batch)
            result = self._step(stage, net, params, optimizer, batch)
            lr = optimizer.param_groups[0]["lr"]  # the lr this step used
            with warnings.catch_warnings():  # a skipped first step triggers torch's order warning
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                scheduler.step()  # stepped on skipped steps too: the lr follows the position
            if result is not None:  # None: skipped (non-finite), kept out of the averages
                self.epoch_meter.add(result)
                window.add(result)
            self.pos = Position(stage.index, epoch, step + 1, self.pos.global_step + 1)
            if bar is not None:
                bar.update(1)
            if self.pos.global_step % self.cfg.run.log_every == 0:
                means = self._log_window(stage, epoch, window, time.perf_counter() - t0, lr)
                if bar is not None:
                    postfix = {k: f"{means[k]:.3f}" for k in ("loss", "reward", "kept", "acc") if k in means}
                    if means["substituted"]:
                        postfix["substituted"] = means["substituted"]
                    bar.set_postfix(postfix)
                window, t0 = Meter(), time.perf_counter()
            every = self.cfg.run.ckpt_every_steps
            if every and self.pos.global_step % every == 0 and step + 1 < self.steps_per_epoch:
                self._save(optimizer, scheduler)
            kill = self.cfg.debug.kill_after_steps
            if kill is not None and self.pos.global_step >= kill:
                os._exit(17)  # debug: die like a killed job, no cleanup, no final checkpoint
        if bar is not None:
            bar.close()

    def _batches(self, start: int):
        """The loader's batches from step `start`; a worker that sends nothing for
        data.loader_timeout seconds (a hung decoder) stops the run naming that batch's videos."""
        received = 0
        try:
            for batch in self.loader:
                yield batch
                received += 1
        except RuntimeError as err:
            if "DataLoader timed out" not in str(err):
                raise
            waiting = start + received
            n = self.videos_per_step
            order = list(self.sampler)[received * n:(received + 1) * n]  # its videos
            paths = getattr(self.train_set, "paths", None)
            names = [paths[i] if paths is not None else f"item {i}" for i in order]
            raise RuntimeError(
                f"no training batch for step {waiting} of the epoch after {self.cfg.data.loader_timeout:g} s "
                f"(data.loader_timeout): a DataLoader worker stopped answering while loading one of "
                f"{', '.join(names)}. A decoder hang (decord can); check the file with `videored data "
                "scan`, remove it from the list, or use data.backend=pyav") from err

    def _progress(self, stage: Stage, epoch: int, start: int):
        if not (self.dist.is_main and self.cfg.run.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.steps_per_epoch, initial=start, dynamic_ncols=True,
                    desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}")

    def _step(self, stage: Stage, net: nn.Module, params: list, optimizer, batch) -> Optional[StepResult]:
        """One optimizer step; None when it was skipped for a non-finite loss or gradient."""
        x, y = unpack_batch(batch)
        x = x.to(self.dist.device, non_blocking=True)
        y = y.to(self.dist.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            if stage.kind == "interpreter":
                r = self.cfg.reinforce
                result = interpreter_step(net, self.model, x, y, stage.group, r.tau, r.squared, r.baseline,
                                          r.samples)
            elif self.pruning is not None and stage.kind == "supervised":
                result = pruner_step(net, x, y, stage, self.pruning, self.teacher,
                                     **self._reduction(stage))
            else:
                result = classification_step(net, x, y, stage, **self._reduction(stage))
        optimizer.zero_grad(set_to_none=True)
        if any_rank(not bool(torch.isfinite(result.loss)), self.dist.device):
            self._count_nonfinite("loss")
            return None
        result.loss.backward()
        clip = self.cfg.optim.clip_grad
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        if not torch.isfinite(norm):  # grads are all-reduced: every rank sees the same norm
            optimizer.zero_grad(set_to_none=True)
            self._count_nonfinite("gradient")
            return None
        optimizer.step()
        result.sums["grad_norm"] = norm.detach().float() * result.count
        return result

    def _reduction(self, stage: Stage, warmed_up: bool = False) -> dict:
        """Forward arguments of a supervised stage that trains through a reduction ({} if
        dense): the method's setting at this step of its training schedule
        (`Method.train_schedule`, EViT's keep-rate warm-up over schedule.keep_warmup_epochs)."""
        s = self.cfg.schedule
        if stage.kind != "supervised" or s.reduction is None:
            return {}
        start, end = s.keep_warmup_epochs
        epoch = self.pos.epoch + self.pos.step / self.steps_per_epoch  # within this stage
        progress = 1.0 if warmed_up or end <= start else (epoch - start) / (end - start)
        return get_method(s.reduction).training_kwargs(self.model, s.kept_ratio, progress)

    def _count_nonfinite(self, what: str) -> None:
        self.nonfinite += 1
        self.log.log({"kind": "nonfinite", "what": what, "global_step": self.pos.global_step,
                      "count": self.nonfinite})
        if self.nonfinite > self.cfg.run.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite} steps with a non-finite {what} (limit run.max_nonfinite="
                f"{self.cfg.run.max_nonfinite}) at global step {self.pos.global_step}; "
                "lower optim.lr, set optim.clip_grad, or check the inputs")

    def _log_window(self, stage: Stage, epoch: int, window: Meter, seconds: float, lr: float) -> dict:
        means, n = window.global_means(self.dist.device)
        # the epoch's substituted items so far (all ranks); stops the run once over the limit
        means["substituted"] = self.subs.check_window(f"stage {stage.name} epoch {epoch}", self.dist.device)
        self.log.log({"kind": "step", "stage": stage.name, "epoch": epoch, "step": self.pos.step,
                      "global_step": self.pos.global_step, "lr": lr,
                      "throughput": n / max(seconds, 1e-9), "nonfinite": self.nonfinite, **means},
                     self.pos.global_step)
        return means

    def _finish(self) -> dict:
        result = {"stages": self.summary, "global_steps": self.pos.global_step,
                  "nonfinite_steps": self.nonfinite, "world_size": self.dist.world_size,
                  "substitutions": self.subs.summary()}
        if self.dist.is_main:
            extra = {"config": to_dict(self.cfg), "summary": self.summary}
            hook = write_pause_hook(self.cfg.debug, self.out, "model")
            if hasattr(self.model, "model_config"):  # rebuildable by videored.models.load_model_file
                from videored.models import save_model_file

                save_model_file(self.model, self.out / "model.pt", write_hook=hook, **extra)
            else:
                ckpt.atomic_save({"model": self.model.state_dict(), **extra}, self.out / "model.pt", hook=hook)
            atomic_write_text(json.dumps(result, indent=2), self.out / "summary.json")
        barrier()
        return result


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_resume(resume: Optional[str], out_dir: str | Path) -> Optional[tuple[Path, dict]]:
    """`auto`: the newest valid checkpoint in <out>/checkpoints (None if there is none);
    a path: that checkpoint (an unreadable one is an error); None: start fresh."""
    if resume is None:
        return None
    if resume == "auto":
        return ckpt.find_latest(Path(out_dir) / "checkpoints")
    return Path(resume), ckpt.load_checkpoint(resume)


def train(cfg: DictConfig, out_dir: str | Path, resume: Optional[str] = None, *,
          model: Optional[nn.Module] = None, train_set: Optional[Dataset] = None,
          val_set: Optional[Dataset] = None) -> dict:
    """Run the configured stages; returns the summary also written to <out>/summary.json.

    Joins the process group described by torchrun/SLURM variables (and leaves it at the end if
    it joined it). model / train_set / val_set default to the config's builders.
    """
    import torch.distributed as tdist

    from videored.normalization import resolve_normalization

    from .builders import build_dataset, build_model
    from .distributed import cleanup, init_distributed

    owned = not (tdist.is_available() and tdist.is_initialized())
    dist = init_distributed(cfg.run.device)
    try:
        seed_everything(cfg.run.seed)  # identical initial weights on every rank
        model = model if model is not None else build_model(cfg)
        resolve_normalization(cfg, model)  # the weights' own, unless the config overrides it
        train_set = train_set if train_set is not None else build_dataset(cfg, "train")
        if val_set is None and cfg.data.val_split:
            val_set = build_dataset(cfg, cfg.data.val_split)
        seed_everything(cfg.run.seed + 7919 * dist.rank)  # distinct Bernoulli samples per rank
        trainer = Trainer(cfg, out_dir, dist, model, train_set, val_set)
        found = resolve_resume(resume, out_dir)
        if found is not None:
            path, state = found
            trainer.load_state(state, str(path))
            if dist.is_main:
                print(f"resuming from {path} at {state['position']}", flush=True)
        elif resume == "auto" and dist.is_main:
            print(f"--resume auto: no checkpoint in {Path(out_dir) / 'checkpoints'}, starting fresh",
                  flush=True)
        return trainer.run()
    finally:
        if owned:
            cleanup()
