"""``equalize=True``: the same number of samples for every rank and DataLoader worker, from the
plan (``DriftDataset.plan``: stored counts and the gate's verdicts, the store only)."""

from __future__ import annotations

import warnings

from .distributed import Placement
from .sources import Shard

Plan = dict[tuple[str, str | None], dict]


def keyed_plan(shards: list[Shard], rows: list[dict]) -> Plan:
    """``plan()`` rows by (url, version); refuses a shard to read without a stored count."""
    plan = {(s.url, s.version): row for s, row in zip(shards, rows)}
    missing = [r["url"] for r in plan.values() if r["n"] is None and r["action"] == "read"]
    if missing:
        raise ValueError(
            f"equalize=True needs a stored profile of every shard; {len(missing)} have none "
            f"(first: {missing[0]}): run `driftloader profile` on them, or use .with_epoch(n)"
        )
    return plan


def equal_split(plan: Plan, shards: list[Shard], total: int) -> list[list[Shard]]:
    """``shards`` (in epoch order) dealt to ``total`` slices: those the plan reads
    round-robin, and the others (skipped or excluded) round-robin on their own. Slices then
    differ by at most one readable shard and each shard goes to exactly one slice. A slice
    lists its unread shards first: never opened, they cost no bytes, and the gate records
    their decisions before the ``equalize`` limit can stop the slice."""
    read = [s for s in shards if plan[(s.url, s.version)]["action"] == "read"]
    unread = [s for s in shards if plan[(s.url, s.version)]["action"] != "read"]
    return [unread[i::total] + read[i::total] for i in range(total)]


def equal_limit(plan: Plan, ordered: list[Shard], where: Placement) -> int:
    """Samples per iterator: the smallest rank x worker slice's count.

    Warns when that is 0, e.g. because fewer shards are read than there are iterators."""
    parts = equal_split(plan, ordered, where.total)
    rows = [[plan[(s.url, s.version)] for s in part] for part in parts]
    totals = [sum(r["n"] for r in part if r["action"] == "read") for part in rows]
    limit = min(totals)
    if limit == 0:
        readable = sum(r["action"] == "read" for part in rows for r in part)
        warnings.warn(
            f"equalize=True: every iterator yields 0 samples this epoch: "
            f"{_why_empty(readable, len(ordered), where)}",
            RuntimeWarning,
            stacklevel=3,
        )
    return limit


def _why_empty(readable: int, shards: int, where: Placement) -> str:
    iterators = (
        f"{where.total} iterators ({where.world_size} ranks x {where.num_workers} "
        "DataLoader workers)"
    )
    if readable == 0:
        return f"all {shards} shards are skipped or excluded"
    if readable < where.total:
        return (
            f"only {readable} of {shards} shards are read (the others are skipped or "
            f"excluded), fewer than the {iterators}; use fewer DataLoader workers or ranks, or "
            "more (smaller) shards"
        )
    return f"a slice of the {iterators} has only empty shards"


def rank_counts(
    shards: list[Shard], rows: list[dict] | None, ordered: list[Shard], world: int
) -> tuple[list[int], str]:
    """Per rank when ``ordered`` is split by node: samples, from ``plan()`` rows (one per
    shard of ``shards``) when every shard to read has a stored count; else shards."""
    ranks = [ordered[r::world] for r in range(world)]
    if rows is None or any(r["n"] is None and r["action"] == "read" for r in rows):
        return [len(rank) for rank in ranks], "shards"
    plan = {(s.url, s.version): row for s, row in zip(shards, rows)}
    read = [[plan[(s.url, s.version)] for s in rank] for rank in ranks]
    return [sum(r["n"] for r in rank if r["action"] == "read") for rank in read], "samples"
