"""Fault injection for preemption tests: pause inside a checkpoint or model-file write.

A test (or a person checking a cluster) sets `debug.pause_write_at` to "start", "middle" or "end";
the first such write of the run directory then creates `<run>/debug_write_paused` and sleeps
`debug.pause_write_s` seconds at that point of the write, so that a signal sent on seeing the
marker (e.g. `scancel --signal=USR2`) lands inside the write. Once per run directory: the requeued
job that resumes in the same directory writes normally.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from videored.atomic_io import WriteHook

MARKER = "debug_write_paused"


def write_pause_hook(debug: Any, run_dir: str | Path, file: str) -> Optional[WriteHook]:
    """The hook to pass to `atomic_save` for a write of kind `file` ("checkpoint" | "model"),
    or None when the config asks for no pause there (debug: the config's `debug` section)."""
    if debug.pause_write_at is None or debug.pause_write_file != file:
        return None
    marker = Path(run_dir) / MARKER
    if marker.exists():
        return None

    def hook(phase: str) -> None:
        if phase == debug.pause_write_at and not marker.exists():
            marker.write_text(f"{file} {phase} pid {os.getpid()}\n", encoding="utf-8")
            time.sleep(debug.pause_write_s)

    return hook
