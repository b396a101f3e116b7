"""Per-item random draws: a training item's augmentation as a pure function of (epoch seed, index).

DataLoader workers each own a random stream, and which worker loads an item depends on the
worker count and, after a resume, on how many batches were skipped. Drawing an item's numbers
from a stream seeded by (epoch seed, item index) makes them independent of both, so a run
resumed mid-epoch replays its clips exactly with any number of workers, and 0 or 8 workers
give the same batches.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def seeded_draws(seed: int | None, index: int) -> Iterator[None]:
    """Inside: Python's `random`, numpy's global stream and torch's CPU generator seeded from
    (seed, index); outside, all three are as they were (the training loop's own draws are
    untouched). numpy is included for timm's RandAugment, which picks its ops with
    `np.random.choice`. seed None: the process's streams are used as they are."""
    if seed is None:
        yield
        return
    # SeedSequence mixes the pair, so items of neighbouring epochs or indices are unrelated
    state = np.random.SeedSequence([int(seed) % 2**63, int(index)]).generate_state(3, dtype=np.uint64)
    saved, saved_np = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(int(state[0]))
        torch.manual_seed(int(state[1]) % 2**63)
        np.random.seed(int(state[2]) % 2**32)
        try:
            yield
        finally:
            random.setstate(saved)
            np.random.set_state(saved_np)
