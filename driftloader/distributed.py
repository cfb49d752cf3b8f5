"""Rank and world discovery, DataLoader worker info, and merging profiles and reports across ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .profile import Profile


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


def placement(
    split_by_node: bool = True,
    split_by_worker: bool = True,
    rank_world: tuple[int, int] | None = None,
) -> Placement:
    """Where the current iterator runs (rank and DataLoader worker).

    ``rank_world`` is used when this process has no initialised process group: a DataLoader
    worker started by spawn (the default under ``mp.spawn``) does not inherit the group, so
    the dataset carries the rank it was pickled on.
    """
    from torch.utils.data import get_worker_info

    rank, world = (0, 1)
    if split_by_node:
        rank, world = rank_world if rank_world and not is_initialised() else rank_and_world()
    info = get_worker_info() if split_by_worker else None
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return Placement(rank, world, worker, workers)


def check_single_node(rank_world: tuple[int, int] | None = None) -> None:
    """webdataset's ``nodesplitter=single_node_only``: more than one rank is an error."""
    world = placement(True, False, rank_world).world_size  # ranks, as if splitting
    if world > 1:
        raise ValueError(
            f"nodesplitter=single_node_only but there are {world} ranks: pass "
            "split_by_node=True (or nodesplitter=webdataset.split_by_node) to split shards "
            "across ranks, or split_by_node=False to read every shard on every rank"
        )


def is_initialised() -> bool:
    """Whether torch.distributed has an initialised process group here."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def merge_profiles(profile: Profile | None, group: Any = None) -> Profile:
    """Merge every rank's profile into one, on every rank (a collective: all ranks call it).

    Profiles travel as their JSON-safe ``to_dict()`` through ``all_gather_object``, so this
    works with gloo and nccl alike (with nccl, set the CUDA device first). A rank with nothing
    to contribute passes ``None``. Without an initialised process group, returns a copy.
    """
    from .profile import Profile

    if not is_initialised():
        if profile is None:
            raise ValueError("merge_profiles got profile=None and there are no other ranks")
        return profile.copy()
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, None if profile is None else profile.to_dict(), group=group)
    profiles = [Profile.from_dict(d) for d in gathered if d is not None]
    if not profiles:
        raise ValueError("merge_profiles: every rank passed profile=None")
    return Profile.merged(profiles)


def gather_reports(rows: list[dict], group: Any = None) -> list[dict]:
    """Gather each rank's drift report rows (JSON-safe dicts) to rank 0 of ``group``.

    A collective: every rank calls it. Rank 0 gets all rows, ordered by rank; others get ``[]``.
    A decision that several ranks report (read back from the shared catalog) is kept once.
    """
    if not is_initialised():
        return list(rows)
    import torch.distributed as dist

    dst = 0 if group is None else dist.get_global_rank(group, 0)
    mine = dist.get_rank() == dst
    gathered: list[Any] | None = [None] * dist.get_world_size(group) if mine else None
    dist.gather_object(list(rows), gathered, dst=dst, group=group)
    if not mine:
        return []
    unique: dict[tuple, dict] = {}
    for part in gathered:
        for row in part:
            unique.setdefault((row.get("url"), row.get("version"), row.get("decided")), row)
    return list(unique.values())
