"""Checking shards against a stored reference: profile what is not stored yet, then compare."""

from __future__ import annotations

from collections.abc import Sequence

from .drift import DriftConfig, ShardDrift, compare
from .profiling import Metadata, profile_shards
from .sources import expand_urls, redact, stat_shards
from .store import ProfileStore


def check_shards(
    urls: str | Sequence[str],
    store: ProfileStore,
    reference: str,
    *,
    config: DriftConfig | None = None,
    storage_options: dict | None = None,
    workers: int = 1,
    record: bool = True,
    metadata: Metadata = None,
) -> list[ShardDrift]:
    """Compare every shard of ``urls`` (at its current version) with reference ``reference``.

    Shards without a stored profile at their current version are profiled first (and stored,
    so the next check or training run reuses them), with their metadata (sidecar ``<url>.json``
    and ``metadata``, see ``profiling.shard_metadata``). Results are recorded in the catalog.
    """
    ref = store.get_reference(reference)
    shards = stat_shards(expand_urls(urls, storage_options), storage_options)
    profile_shards(
        [s.url for s in shards],
        store,
        workers=workers,
        storage_options=storage_options,
        progress=False,
        metadata=metadata,
    )
    results = []
    for shard in shards:
        profile = store.get_profile(shard.url, shard.version)
        if profile is None:  # overwritten between stat and profiling: profile what is there now
            raise FileNotFoundError(f"{redact(shard.url)} changed while it was checked; run again")
        result = compare(profile, ref, config)
        results.append(result)
        if record:
            store.record(
                shard.url,
                shard.version,
                {
                    "reference": reference,
                    "action": "checked",
                    "drifted": result.drifted,
                    "score": result.score,
                    "top": [f.to_dict() for f in result.top(5)],
                },
            )
    return results
