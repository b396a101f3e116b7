"""The Algorithm-1 stage loop: stages -> epochs -> steps, with exact resume, DDP and logging.

Training position = (stage, epoch, step): the next step to run. A checkpoint (written and read by
`checkpoint.Checkpointer`) stores it with the model, optimizer, scheduler, every rank's RNG states
and running epoch sums, so a run resumed from it replays the remaining steps exactly: the
sampler's order is a pure function of (seed, stage, epoch) and skips the samples already consumed.
`train()` first claims the run folder (`run_folder`: lock, no silent restart over a run).
"""
from __future__ import annotations

import gc
import json
import os
import sys
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
from .builders import (batches_or_hang_error, build_optimizer, build_scheduler, loader_workers, stage_lr,
                       unpack_batch)
from .config import save_config, to_dict
from .distributed import DistInfo, any_rank, barrier
from .fault_injection import write_pause_hook
from .metrics_log import Meter, MetricsLogger
from .run_folder import claim_run_folder
from .sampler import ResumableSampler
from .substitutions import SubstitutionTally
from .stages import (Stage, StepResult, classification_step, dense_teacher, interpreter_step,
                     lr_scales,
                     plan_stages, pruner_step, pruner_training,
                     set_train_mode, trainable_parameters)
from .validation import validate


class NonFiniteLossError(RuntimeError):
    """Too many steps had a non-finite loss or gradient (see run.max_nonfinite), or a whole
    stage had no finite step."""


@dataclass
class Position:
    stage: int = 0
    epoch: int = 0
    step: int = 0  # step within the epoch
    global_step: int = 0


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
        listed = getattr(train_set, "csv_path", "list")  # malformed lines count as bad videos
        malformed = {f"{listed}:{line}": f"malformed line: {why}"
                     for line, why in getattr(train_set, "malformed", [])}
        self.subs = SubstitutionTally(cfg.data.max_bad_fraction,
                                      self.steps_per_epoch * self.videos_per_step * dist.world_size,
                                      malformed)
        self.subs.check_list(len(train_set))
        self.log = MetricsLogger(self.out, enabled=dist.is_main)
        self.checkpointer = ckpt.Checkpointer(
            self.ckpt_dir, cfg.run.keep_checkpoints, dist,
            hook=lambda: write_pause_hook(cfg.debug, self.out, "checkpoint"))
        self.stage_updates = 0  # optimizer steps taken in the current stage (0 at its end: error)
        self.config_changes: list[dict] = []  # what resumes changed (config_changes.json)
        # a learned pruner's recipe (SPViT / SViT) and its teacher: the starting weights, copied
        # before a resume loads newer ones
        self.pruning = pruner_training(cfg, self.model)
        self.teacher = dense_teacher(self.model, self.pruning)

    # ---- resume ----
    def load_state(self, state: dict, source: str) -> None:
        """Restore from a checkpoint dict (`ckpt.Checkpointer.restore` checks it: config drift,
        stage plan, weights); the RNG and optimizer parts apply when the loop reaches the saved
        stage. Config changes that a resume accepts are printed and recorded."""
        plan = [(s.kind, s.group, s.epochs) for s in self.plan]
        saved, changes = self.checkpointer.restore(state, source, cfg=self.cfg, model=self.model,
                                                   plan=plan, batch_size=self.batch)
        self.pos = Position(**saved.position)
        self.stage_updates = saved.stage_updates
        self.nonfinite = saved.nonfinite
        self.summary = list(saved.summary)
        self.subs.epochs = list(saved.substitutions)
        self.log.rewind(self.pos.global_step, source)  # metrics.jsonl: no step logged twice
        if changes:
            self._record_config_changes(changes, source)

    def _record_config_changes(self, changes: dict, source: str) -> None:
        """Print, log and keep (config_changes.json, then summary.json) what a resume changed."""
        row = {"global_step": self.pos.global_step, "checkpoint": source,
               "changes": {k: {"before": a, "after": b} for k, (a, b) in changes.items()}}
        self.config_changes.append(row)
        if not self.dist.is_main:
            return
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        print(f"videored train: resuming {source} with a changed config: {listed} "
              f"(recorded in {self.out / 'config_changes.json'})", file=sys.stderr, flush=True)
        self.log.log({"kind": "config_change", **row})
        path = self.out / "config_changes.json"
        earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
        atomic_write_text(json.dumps(earlier + [row], indent=2), path)

    def _apply_resume(self, optimizer, scheduler) -> None:
        """Optimizer/scheduler (mid-stage), this rank's RNG states and running sums (mid-epoch)."""
        mine = self.checkpointer.resume_stage(optimizer, scheduler)
        if mine is not None:
            self.epoch_meter.load(mine["meter"])
            if "substitutions" in mine:
                self.subs.load_rank_state(mine["substitutions"])

    def _save(self, optimizer=None, scheduler=None) -> None:
        p = self.pos

        def state(rank_states: list[dict]) -> ckpt.TrainingState:
            return ckpt.TrainingState(
                model=self.model.state_dict(),
                optimizer=optimizer.state_dict() if optimizer is not None else None,
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                position=vars(p).copy(), plan=[vars(s).copy() for s in self.plan],
                sampler={"seed": self.cfg.run.seed, "epoch_key": self._epoch_key(p.stage, p.epoch),
                         "consumed_per_rank": p.step * self.videos_per_step},
                rank_states=rank_states, nonfinite=self.nonfinite, summary=self.summary,
                stage_updates=self.stage_updates, substitutions=self.subs.epochs,
                world_size=self.dist.world_size, batch_size=self.batch, config=to_dict(self.cfg))

        mine = {"rng": ckpt.rng_state(), "meter": self.epoch_meter.state(),
                "substitutions": self.subs.rank_state()}
        self.checkpointer.save((p.stage, p.epoch, p.step), mine, state)

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
        optimizer = build_optimizer(self.model, params, self.cfg, lr, stage.kind,
                                    lr_scales(self.model, self.pruning))
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
                self._check_stage_updated(stage)
                self._end_stage(stage, train_means)
                self.pos = Position(stage.index + 1, 0, 0, self.pos.global_step)
                self._save()
            else:
                self.pos = Position(stage.index, epoch + 1, 0, self.pos.global_step)
                self._save(optimizer, scheduler)
        del net  # frees the DDP reducer and its gradient hooks before the next stage wraps again
        gc.collect()

    def _check_stage_updated(self, stage: Stage) -> None:
        """A stage whose every step was skipped (non-finite) trained nothing: stop, not exit 0."""
        if self.stage_updates == 0:
            steps = stage.epochs * self.steps_per_epoch
            raise NonFiniteLossError(
                f"stage {stage.name} made no update: all of its {steps} steps had a non-finite loss "
                f"or gradient and were skipped ({self.nonfinite} skipped in the run so far); lower "
                "optim.lr, set optim.clip_grad, or check the inputs")
        self.stage_updates = 0

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
                    if self.nonfinite:
                        postfix["skipped"] = self.nonfinite
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
        """The loader's batches from step `start`, a hung worker named (`builders.batches_or_hang_error`)."""
        return batches_or_hang_error(self.loader, lambda k: list(self.sampler)[k * self.videos_per_step:
                                                                               (k + 1) * self.videos_per_step],
                                     self.train_set, start, self.cfg.data.loader_timeout)

    def _progress(self, stage: Stage, epoch: int, start: int):
        if not (self.dist.is_main and self.cfg.run.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.steps_per_epoch, initial=start, dynamic_ncols=True,
                    desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}")

    def _step(self, stage: Stage, net: nn.Module, params: list, optimizer, batch) -> Optional[StepResult]:
        """One optimizer step; None when it was skipped for a non-finite loss or gradient."""
        x, y = unpack_batch(batch, self.dist.device)  # uint8 video is normalized on the device there
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
        self.stage_updates += 1
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
                  "substitutions": self.subs.summary(), "config_changes": self._all_config_changes()}
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


    def _all_config_changes(self) -> list[dict]:
        """Every resume's changes of this run (config_changes.json holds earlier resumes')."""
        path = self.out / "config_changes.json"
        if self.dist.is_main and path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        return list(self.config_changes)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: DictConfig, out_dir: str | Path, resume: Optional[str] = None, *,
          model: Optional[nn.Module] = None, train_set: Optional[Dataset] = None,
          val_set: Optional[Dataset] = None) -> dict:
    """Run the configured stages; returns the summary also written to <out>/summary.json.

    resume: None (the folder must not hold a run), "auto", "fresh" or a checkpoint path (see
    `videored train --help`). Joins the process group described by torchrun/SLURM variables (and leaves it at
    the end if it joined it). model / train_set / val_set default to the config's builders.
    """
    import torch.distributed as tdist

    from videored.normalization import resolve_normalization

    from .builders import build_dataset, build_model
    from .distributed import cleanup, init_distributed

    owned = not (tdist.is_available() and tdist.is_initialized())
    dist = init_distributed(cfg.run.device)
    lock = None
    try:
        lock = claim_run_folder(Path(out_dir), resume, dist)
        found = ckpt.resolve_resume(resume, out_dir)  # before building: a refusal costs nothing
        if found is not None:
            ckpt.resumable_changes(found[1]["config"], cfg, str(found[0]))  # and writes nothing
        seed_everything(cfg.run.seed)  # identical initial weights on every rank
        model = model if model is not None else build_model(cfg)
        resolve_normalization(cfg, model)  # the weights' own, unless the config overrides it
        train_set = train_set if train_set is not None else build_dataset(cfg, "train")
        if val_set is None and cfg.data.val_split:
            val_set = build_dataset(cfg, cfg.data.val_split)
        seed_everything(cfg.run.seed + 7919 * dist.rank)  # distinct Bernoulli samples per rank
        trainer = Trainer(cfg, out_dir, dist, model, train_set, val_set)
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
        if lock is not None:
            lock.release()
        if owned:
            cleanup()
