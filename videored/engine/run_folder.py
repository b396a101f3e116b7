"""Guarding a run folder: one run per folder, never a silent restart over an earlier run.

`videored train --out DIR` owns DIR for the run's lifetime:
- `run.lock` holds the owner (pid, host, SLURM job id, start time) and is touched every
  `HEARTBEAT_S` seconds. A second run refuses to start while the lock is live. A lock is stale
  (taken over, with a notice) when its process is gone (same host), when it belongs to an earlier
  incarnation of this same SLURM job (a requeue keeps the job id), or when its heartbeat is older
  than `STALE_AFTER_S` (a dead owner on another host).
- A folder that already holds a run (checkpoints, model.pt, summary.json, metrics.jsonl) is
  refused without `--resume`; `--resume fresh` starts over on purpose and moves the earlier run's
  files to `DIR/replaced/<UTC time>/` (nothing is deleted).
- Once the lock is held no other writer of this folder is alive, so every `*.tmp.<pid>` file left
  by an atomic write that was killed mid-write is removed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from .distributed import DistInfo, broadcast_object

LOCK_NAME = "run.lock"
RUN_FILES = ("checkpoints", "model.pt", "summary.json", "metrics.jsonl")
REPLACED = "replaced"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
_TMP = re.compile(r"\.tmp\.\d+$")  # videored.atomic_io's temp name: <file>.tmp.<pid>


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to pass instead."""


def existing_run(out: Path) -> list[str]:
    """The files of an earlier run in `out` (an empty checkpoints folder does not count)."""
    found = []
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and any(path.iterdir()) or path.is_file():
            found.append(name)
    return found


def check_folder(out: Path, resume: Optional[str]) -> Optional[Path]:
    """Refuse a folder holding a run when `resume` is None; with "fresh" move that run to
    `out/replaced/<time>/` and return where it went (None when nothing was moved)."""
    found = existing_run(out)
    if not found:
        return None
    if resume is None:
        raise RunFolderError(
            f"{out} already holds a run ({', '.join(found)}): pass --resume auto to continue it, "
            "--resume fresh to start over (its files are moved to "
            f"{out / REPLACED}/<time>/), or choose another --out")
    if resume != "fresh":
        return None
    target = out / REPLACED / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target.mkdir(parents=True, exist_ok=False)
    for name in found + ["config.yaml", "config_changes.json", "tb"]:
        if (out / name).exists():
            shutil.move(str(out / name), str(target / name))
    return target


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Delete the temp files of killed writers in `out` and `out/checkpoints` (call with the lock
    held: then no writer of this folder is alive); returns what was removed."""
    removed = []
    for folder in (out, out / "checkpoints"):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and _TMP.search(path.name):
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def stale_reason(holder: dict, age_s: float) -> Optional[str]:
    """Why the lock of `holder` (its contents) is stale, or None when its owner may be alive."""
    me = _owner()
    if holder.get("slurm_job_id") and holder.get("slurm_job_id") == me["slurm_job_id"]:
        return f"an earlier run of SLURM job {me['slurm_job_id']} (requeued)"
    if holder.get("host") == me["host"]:
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return f"process {pid} on {me['host']} is gone"
        return None
    if age_s > STALE_AFTER_S:
        return f"no heartbeat for {age_s:.0f} s (limit {STALE_AFTER_S:.0f} s)"
    return None


class RunLock:
    """`out/run.lock`, created exclusively; `release()` (or the context manager) removes it."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.took_over: Optional[str] = None  # why an earlier lock was stale, if one was

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(_owner(), fh)
            self._thread = threading.Thread(target=self._beat, name="videored-run-lock", daemon=True)
            self._thread.start()
            return self
        raise RunFolderError(f"{self.path}: could not create the run lock")

    def _take_over_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError):
            holder, age = {}, time.time() - self.path.stat().st_mtime
        reason = stale_reason(holder if isinstance(holder, dict) else {}, age)
        if reason is None:
            raise RunFolderError(
                f"{self.path.parent} is in use by another run (pid {holder.get('pid')} on "
                f"{holder.get('host')}, SLURM job {holder.get('slurm_job_id')}, started "
                f"{holder.get('started')}, heartbeat {age:.0f} s ago): choose another --out, or "
                f"delete {self.path} if that run is certainly dead")
        self.took_over = reason
        self.path.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run_folder(out: Path, resume: Optional[str], dist: DistInfo) -> Optional[RunLock]:
    """Rank 0 takes `out`'s run lock, refuses a folder holding a run without `resume` (moves it
    aside with `fresh`) and removes dead writers' temp files; every rank raises the same
    RunFolderError when that fails. Returns the lock (rank 0) to release at the end."""
    error, lock = None, None
    if dist.is_main:
        try:
            lock = RunLock(out).acquire()
            if lock.took_over:
                print(f"videored train: took over the stale run lock of {out} ({lock.took_over})",
                      file=sys.stderr, flush=True)
            moved = check_folder(out, resume)
            if moved is not None:
                print(f"videored train: --resume fresh: the earlier run's files are now in {moved}",
                      file=sys.stderr, flush=True)
            for path in remove_stale_temp_files(out):
                print(f"videored train: removed {path}, left by a writer that was killed mid-write",
                      file=sys.stderr, flush=True)
        except RunFolderError as err:
            if lock is not None:
                lock.release()
            error = str(err)
    error = broadcast_object(error)
    if error is not None:
        raise RunFolderError(error)
    return lock
