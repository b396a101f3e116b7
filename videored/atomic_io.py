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
import os
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


class _HookedWriter:
    """A write-only file wrapper that calls hook("middle") once, when about half is written."""

    def __init__(self, fh, hook: WriteHook, half: int) -> None:
        self._fh, self._hook, self._half, self._written, self._fired = fh, hook, half, 0, False

    def write(self, data) -> int:
        n = self._fh.write(data)
        self._written += n
        if not self._fired and self._written >= self._half:
            self._fired = True
            self._hook("middle")
        return n

    def flush(self) -> None:
        self._fh.flush()


def _write_atomically(path: str | Path, binary: bool, write: Callable[[Any], None],
                      hook: Optional[WriteHook] = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    with signals_deferred(str(path)):
        try:
            with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
                if hook is not None:
                    hook("start")
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
                if hook is not None:
                    hook("end")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def atomic_save(obj: Any, path: str | Path, hook: Optional[WriteHook] = None) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`, with
    preemption signals held until the rename is done (see the module notes).

    A crash mid-write leaves at most a stray `*.tmp.<pid>` file, never a torn `path`.
    hook: fault injection for tests, called at the "start", "middle" and "end" of the write.
    """
    def write(fh) -> None:
        torch.save(obj, fh if hook is None else _HookedWriter(fh, hook, max(1, _tensor_bytes(obj) // 2)))

    _write_atomically(path, True, write, hook)


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write a text file (e.g. summary.json) with the same guarantees as `atomic_save`."""
    _write_atomically(path, False, lambda fh: fh.write(text))
