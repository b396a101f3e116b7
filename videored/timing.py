"""Interleaved timing: every candidate timed round by round in one process (A, B, C, A, B, ...),
so a noisy neighbour slows all of them alike; the median over rounds after warm-up, with device
synchronization on CUDA, and the peak memory of one call. Used by the speed benchmark, the
evaluation's clips/s and the training-step benchmark (one timer, no copies)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> float:
    """Reset the peak-memory counter; returns the MB in use now (the baseline of `peak_mb`)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:  # Linux: writing 5 resets the process' peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_mb("VmRSS")
    except OSError:
        return float("nan")


def peak_mb(device: torch.device, baseline: float) -> float | None:
    """MB above `baseline` at the peak since `reset_peak` (CUDA allocated; CPU peak RSS)."""
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
        baseline = reset_peak(device)
        for _ in range(warmup):
            fn()
        sync(device)
        peaks[name] = peak_mb(device, baseline)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, peaks


__all__ = ["time_interleaved"]
