"""What a shard gate reads from its store before and while it decides: its exclusion list, its
decision index, the stored profiles of shards it has no decision on, and the catalog rows of
other processes' decisions.

Each is read once per gate and kept on it (``ShardGate._exclusions``, ``_index``), so its
DataLoader workers inherit them and later passes decide from memory. A decision is a pure
result of what keys it, so one in memory never goes stale; one another process took since is
taken again from its profile.

The reads a reference's name tells (the exclusion list, the listing of every decision
context of that reference, and the copy of the index under the gate's drift config:
``index_copy.Latest``) start when the gate is made, beside the reference's own read. The
context's folder is named by the reference's digest, so the index took three round trips
before (the reference, then the listing, then the index file), about 0.17 s at 40 ms a
request for every dataset made. Now it takes one when the copy is current (after a
compaction or a fold, with no new record since), two when not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from .decisions import DecisionIndex, list_contexts, read_latest
from .store import shard_key

if TYPE_CHECKING:
    from .drift import ShardDrift
    from .gate import ShardGate
    from .profile import Profile
    from .sources import Shard

    Stored = tuple[Profile | None, ShardDrift | None]

EXCLUSIONS, CONTEXTS, LATEST = "exclusions", "decision contexts", "latest decisions"


def start_reads(gate: ShardGate) -> None:
    """Start reading what the gate's reference's name tells, on background threads (taken by
    ``read_for_verdicts``): call it before the reference is read."""
    if gate.store is None or gate.reference_name is None:
        return
    from .versions import load_exclusions

    store, name = gate.store, gate.reference_name
    gate._ahead.start(EXCLUSIONS, functools.partial(load_exclusions, store, name))
    gate._ahead.start(CONTEXTS, functools.partial(list_contexts, store, name))
    gate._ahead.start(LATEST, functools.partial(read_latest, store, name, gate.config))


def prepare_verdicts(gate: ShardGate) -> None:
    """What a pass does before its first verdict: what verdicts read is read once per gate,
    and later passes decide from memory, looking in the store again only at their first shard
    they do not know (another process, e.g. a DataLoader worker of an earlier epoch, may have
    decided it since). Profile reads a pass ended before taking are dropped."""
    gate._look_again = gate._index is not None
    read_for_verdicts(gate)
    gate._ahead.clear()


def read_for_verdicts(gate: ShardGate) -> None:
    """Read the exclusion list and the decision index, once per gate: what ``start_reads``
    started is taken, the rest read now (the index file, once the listing and the reference
    tell which)."""
    if gate.store is None or gate.reference_name is None:
        return
    if gate._exclusions is not None:
        decisions_of(gate).read()
        return
    start_reads(gate)  # a read started already is not started again
    listed = gate._ahead.take(CONTEXTS, lambda: None)
    decisions_of(gate).read(listed, gate._ahead.take(LATEST, lambda: None))
    gate._exclusions = gate._ahead.take(EXCLUSIONS, lambda: exclusions(gate))


def exclusions(gate: ShardGate) -> set[tuple[str, str | None]]:
    """The ``(shard key, version)`` pairs ``driftloader quarantine`` put on the exclusion list
    of the gate's reference, read once per gate."""
    if gate._exclusions is None:
        from .versions import load_exclusions

        gate._exclusions = load_exclusions(gate.store, gate.reference_name)
    return gate._exclusions


def decisions_of(gate: ShardGate) -> DecisionIndex:
    """The gate's decision index (its reference and drift config), read once per gate."""
    if gate._index is None:
        gate._index = DecisionIndex.of(gate.store, gate.reference_name, gate.reference, gate.config)
    return gate._index


def clean_keys(gate: ShardGate) -> set[str]:
    """The shard keys the gate's decision index found clean at every version it holds, none
    quarantined: what a gated dataset may read before it knows their versions."""
    if gate.store is None or gate.reference_name is None:
        return set()
    keys = decisions_of(gate).clean_keys()
    excluded = exclusions(gate)
    return keys - {key for key, _ in excluded} if excluded else keys


def verdict_reads(
    gate: ShardGate, shard: Shard
) -> tuple[Callable[[], Profile | None], Callable[[Profile | None], Stored]]:
    """What a verdict on a shard with no decision reads and then computes: the read of its
    stored profile, and the profile's drift against the reference (``ProfilesAhead.start``
    runs both ahead of the reader, ``take`` gives the drift's result: (profile, drift))."""
    return functools.partial(stored_profile, gate, shard), functools.partial(stored_drift, gate)


def stored_profile(gate: ShardGate, shard: Shard) -> Profile | None:
    """The shard's stored profile, or the one the gate made and still writes behind."""
    unstored = gate._unstored.get((shard.url, shard.version))
    if unstored is not None:
        return unstored
    return gate.store.get_profile(shard.url, shard.version, gate.featurizer.fingerprint)


def sidecar_key(shard: Shard) -> tuple:
    return ("sidecar", shard.url, shard.version)


def sidecar_of(gate: ShardGate, shard: Shard) -> dict | None:
    """The shard's metadata sidecar for the profile the gate makes of it: read ahead with its
    profile (``with_sidecar_read``), else now (one small request); None without one, or when
    the gate reads none."""
    if not gate.options.sidecar:
        return None
    return gate._ahead.take(sidecar_key(shard), _sidecar_read(gate, shard))


def with_sidecar_read(
    gate: ShardGate, shard: Shard, read: Callable[[], Profile | None]
) -> Callable:
    """``read`` (of the shard's stored profile, on a thread of ``ProfilesAhead``), which also
    starts reading the shard's metadata sidecar when no profile is stored: the gate will
    profile the shard as it streams, with its sidecar. Read when the shard starts, the sidecar
    was a round trip before its first sample (as long as reading a shard of 1,000 small
    samples at 40 ms). The gate takes it, or discards it if it does not read the shard."""

    def reading() -> Profile | None:
        profile = read()
        if profile is None and gate.options.sidecar:
            gate._ahead.start(sidecar_key(shard), _sidecar_read(gate, shard))
        return profile

    return reading


def _sidecar_read(gate: ShardGate, shard: Shard) -> Callable[[], dict | None]:
    from .profiling_io import read_sidecar

    return functools.partial(read_sidecar, shard.url, gate.storage_options)


def stored_drift(gate: ShardGate, stored: Profile | None) -> Stored:
    """(stored profile, its drift against the gate's reference); None for what is not there."""
    from .drift import compare

    reference = gate.reference
    if stored is None or reference is None:
        return stored, None
    return stored, compare(stored, reference, gate.config)


def catalog_decisions(
    gate: ShardGate, shards: list[Shard], since: float, rows: list[dict]
) -> list[dict]:
    """Catalog decisions on ``shards`` against the gate's reference since ``since`` not in
    ``rows`` (decisions of other processes)."""
    store, reference = gate.store, gate.reference_name
    if store is None or reference is None:
        return []
    seen = {(shard_key(r["url"]), r["version"]) for r in rows}
    mine = {(shard_key(s.url), s.version) for s in shards}
    found = []
    for row in store.catalog():
        key = (row.get("url"), row.get("version"))
        if (
            key in mine
            and key not in seen
            and row.get("reference") == reference
            and row.get("policy") is not None
            and float(row.get("decided") or 0) >= since
        ):
            found.append(row.to_dict())
            seen.add(key)
    return found
