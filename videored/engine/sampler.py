"""A DistributedSampler whose epoch order is a pure function of (seed, epoch) and which can skip
the batches already consumed, so a run resumed mid-epoch sees exactly the remaining samples."""
from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded per-epoch permutation, rank r takes every world-th index) plus
    `skip`: the first `skip` indices of this rank's share are left out of the next iteration.

    With world_size processes of batch b, global step s holds the permutation slice
    [s*b*world, (s+1)*b*world): the same samples one process with batch b*world would see.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's permutation and how many of this rank's indices were consumed."""
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)
