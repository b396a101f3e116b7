"""Interleaved timing: every candidate timed round by round in one process (A, B, C, A, B, ...),
so a noisy neighbour slows all of them alike; the median over rounds after warm-up, with device
synchronization on CUDA, and the peak memory of one call. Used by the speed benchmark, the
evaluation's clips/s and the training-step benchmark (one timer, no copies)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:  # Linux: writing 5 resets the process' peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_mb("VmRSS")
    except OSError:
        return float("nan")


def _peak_mb(device: torch.device, baseline: float) -> float | None:
    if device.type == "cuda":
        return max(0.0, torch.cuda.max_memory_allocated(device) / 2**20 - baseline)
    peak = _proc_status_mb("VmHWM")
    return None if peak != peak or baseline != baseline else max(0.0, peak - baseline)


def _proc_status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int, runs: int,
                     device: torch.device) -> tuple[dict[str, float], dict[str, float | None]]:
    """Median seconds per call of each fn, timed round-robin; plus peak memory per fn (MB).

    fns are called warmup times each first (that also measures their peak memory), then `runs`
    rounds of one call each."""
    peaks: dict[str, float | None] = {}
    for name, fn in fns.items():  # warm-up (also measures the peak memory of one call)
        baseline = _reset_peak(device)
        for _ in range(warmup):
            fn()
        _sync(device)
        peaks[name] = _peak_mb(device, baseline)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, peaks


__all__ = ["time_interleaved"]
