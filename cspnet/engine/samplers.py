"""Samplers: training that can resume mid-epoch, and validation shards that count every sample once."""

from __future__ import annotations

import itertools

from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for a single process) that can start part-way into an epoch, for resume."""

    start = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler):
    """Every `world`-th index, without padding, so metrics summed over ranks count each sample once."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
