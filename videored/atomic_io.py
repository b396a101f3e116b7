"""Atomic file writes, shared by training checkpoints, model files and run summaries.

A write is atomic twice over: against crashes (temp file + fsync + rename: a reader sees the old
file or the new one, never a torn one) and against signals. SLURM warns of a preemption or a time
limit with a signal (USR2 / TERM by default), and submitit's Python handler runs in the main thread
between two bytecodes: inside `torch.save` (a Python loop over storages) it raised mid-write and
the job died with "inline_container.cc: unexpected pos" instead of requeuing. So the whole write,
rename included, runs with those signals held (`signals_deferred`) and they are delivered, in
arrival order, right after the file is in place: the handler then sees a complete checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

# Signals a scheduler sends before it stops a job: SLURM's --signal (submitit: USR2, or
# $SUBMITIT_PREEMPT_SIGNAL), TERM at the time limit / scancel, INT (Ctrl-C), HUP, USR1.
_DEFERRED_NAMES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")

# hook(phase) with phase "start" (temp file open, nothing written), "middle" (inside torch.save,
# about half of the tensor bytes written), "end" (written and fsynced, not yet renamed).
WriteHook = Callable[[str], None]

_holding = threading.local()  # nesting depth of signals_deferred in this thread


class WriteError(OSError):
    """A write that failed; the one-line message names the file and the cause. The file's
    previous version (if any) is untouched and no temp file is left. `errno` is the cause's."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N] " prefix
        return str(self.strerror)


_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "file size limit reached"}


def _write_error(path: Path, err: OSError, needed: int) -> WriteError:
    """A WriteError for `err`: "disk full at PATH, N MB needed (M MB free)" and the like."""
    if err.errno in _FULL:
        try:
            free = f", {shutil.disk_usage(path.parent).free / 2**20:.0f} MB free there"
        except OSError:
            free = ""
        return WriteError(err.errno, f"{_FULL[err.errno]} at {path}, {needed / 2**20:.1f} MB needed"
                                     f"{free}; nothing was overwritten")
    return WriteError(err.errno, f"cannot write {path}: {err.strerror or err}; nothing was overwritten")


def _deferrable_signals() -> list[signal.Signals]:
    names = list(_DEFERRED_NAMES)
    extra = os.environ.get("SUBMITIT_PREEMPT_SIGNAL")
    if extra:
        names.append("SIG" + extra.upper().removeprefix("SIG"))
    return list(dict.fromkeys(s for n in names if (s := getattr(signal, n, None)) is not None))


@contextlib.contextmanager
def signals_deferred(what: str) -> Iterator[None]:
    """Hold scheduler/termination signals while the block runs; re-raise each caught one after.

    Only the main thread can install signal handlers (and Python runs them only there), so in
    other threads, or nested inside another deferral, this does nothing extra. Signals whose
    handler is SIG_IGN or was installed outside Python are left alone.
    """
    if threading.current_thread() is not threading.main_thread() or getattr(_holding, "depth", 0):
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous = {}
    for sig in _deferrable_signals():
        handler = signal.getsignal(sig)
        if handler is None or handler is signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, hold)
    _holding.depth = 1
    try:
        yield
    finally:
        _holding.depth = 0
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):  # each signal once, in arrival order
            print(f"videored: {signal.Signals(signum).name} arrived while writing {what}; "
                  "delivered now that the write is complete", file=sys.stderr, flush=True)
            signal.raise_signal(signum)  # the restored handler runs (and may raise) right here


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the distinct tensor storages in a nested dict/list/tuple (what torch.save writes)."""
    seen: dict[int, int] = {}
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return sum(seen.values())


class _Writer:
    """A write-only file wrapper that keeps the first OSError of a write (torch.save turns it into
    "inline_container.cc: unexpected pos", which names neither the file nor the cause) and, with a
    hook, calls hook("middle") once, when about half is written."""

    def __init__(self, fh, hook: Optional[WriteHook] = None, half: int = 0) -> None:
        self._fh, self._hook, self._half, self._written, self._fired = fh, hook, half, 0, False
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            n = self._fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise
        self._written += n
        if self._hook is not None and not self._fired and self._written >= self._half:
            self._fired = True
            self._hook("middle")
        return n

    def flush(self) -> None:
        self._fh.flush()


def _write_atomically(path: str | Path, binary: bool, write: Callable[[_Writer], None],
                      hook: Optional[WriteHook] = None, needed: int = 0) -> None:
    """needed: the bytes the write takes (for a disk-full message)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    with signals_deferred(str(path)):
        fh = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as raw:
                fh = _Writer(raw, hook, needed // 2)
                if hook is not None:
                    hook("start")
                write(fh)
                raw.flush()
                os.fsync(raw.fileno())
                if hook is not None:
                    hook("end")
            os.replace(tmp, path)
        except OSError as err:
            if isinstance(err, WriteError):
                raise
            raise _write_error(path, err, needed) from None
        except RuntimeError:  # torch.save's own wrapping of a failed write
            if fh is not None and fh.error is not None:
                raise _write_error(path, fh.error, needed) from None
            raise
        finally:
            if tmp.exists():
                tmp.unlink()


def atomic_save(obj: Any, path: str | Path, hook: Optional[WriteHook] = None) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`, with
    preemption signals held until the rename is done (see the module notes).

    A crash mid-write leaves at most a stray `*.tmp.<pid>` file, never a torn `path` (a resumed
    run removes those: `videored.engine.run_folder`). A failed write (disk full, quota, ulimit -f)
    is a `WriteError` naming `path`, the cause and the MB needed.
    hook: fault injection for tests, called at the "start", "middle" and "end" of the write.
    """
    _write_atomically(path, True, lambda fh: torch.save(obj, fh), hook, needed=max(2, _tensor_bytes(obj)))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write a text file (e.g. summary.json) with the same guarantees as `atomic_save`."""
    _write_atomically(path, False, lambda fh: fh.write(text), needed=len(text.encode("utf-8")))
