"""Helpers every benchmark module shares: inputs, the device's name, the timer and memory probes.

Benchmarks import these (never another benchmark's private helpers); the interleaved timer and
the memory probes themselves live in `videored.timing` (evaluation's clips/s uses them too).
"""
from __future__ import annotations

import os

import torch

from videored.timing import peak_mb, reset_peak, sync, time_interleaved


def example_input(model, batch_size: int, device: torch.device) -> torch.Tensor:
    """A fixed random batch the model takes: (B, 3, T, H, W) video or (B, 3, H, W) images."""
    T, gh, _ = model.grid
    size = gh * model.patch_size
    shape = (batch_size, 3, T, size, size) if model.embed.num_frames else (batch_size, 3, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)


def device_name(device: torch.device) -> str:
    """What a row ran on: the GPU's name, or the CPU's cores and torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


__all__ = ["device_name", "example_input", "peak_mb", "reset_peak", "resolve_device", "sync",
           "time_interleaved"]
