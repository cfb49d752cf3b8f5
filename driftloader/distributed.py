"""Rank and world discovery for torch.distributed runs, and DataLoader worker info."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """Which slice of the shards this iterator reads: rank x worker of world x workers."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def total(self) -> int:
        return self.world_size * self.num_workers


def rank_and_world() -> tuple[int, int]:
    """Rank and world size from torch.distributed when initialised, else RANK / WORLD_SIZE."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def placement(split_by_node: bool = True, split_by_worker: bool = True) -> Placement:
    """Where the current iterator runs (rank and DataLoader worker)."""
    from torch.utils.data import get_worker_info

    rank, world = rank_and_world() if split_by_node else (0, 1)
    info = get_worker_info() if split_by_worker else None
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return Placement(rank, world, worker, workers)
