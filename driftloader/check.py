"""Checking shards against a stored reference: profile what is not stored yet, then compare."""

from __future__ import annotations

from collections.abc import Sequence

from .drift import DriftConfig, ShardDrift, compare
from .handlers import on_error_name
from .profiling import ON_ERROR, Metadata, ProfilingSummary, profile_shards
from .progress import active, track
from .sources import expand_urls, redact, stat_shards
from .store import ProfileStore


class CheckResults(list):
    """The ``ShardDrift`` of every shard checked, in order, and ``failed``: the shards that
    could not be read under ``on_error="skip"``, as ``(url, message)``."""

    def __init__(self, results: Sequence[ShardDrift] = (), failed: Sequence = ()) -> None:
        super().__init__(results)
        self.failed: list[tuple[str, str]] = list(failed)


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
    on_error: str = "raise",
) -> CheckResults:
    """Compare every shard of ``urls`` (at its current version) with reference ``reference``.

    Shards without a stored profile at their current version are profiled first (and stored,
    so the next check or training run reuses them), with their metadata (sidecar ``<url>.json``
    and ``metadata``, see ``profiling.shard_metadata``). Results are recorded in the catalog.
    A shard that cannot be read raises ``ShardReadError``; with ``on_error="skip"`` it is
    listed in the result's ``failed`` and the other shards are still checked.
    """
    on_error_name(on_error, ON_ERROR)
    ref = store.get_reference(reference)
    missing: list[tuple[str, str]] = []
    shards = stat_shards(
        expand_urls(urls, storage_options),
        storage_options,
        failed=missing if on_error == "skip" else None,
    )
    summary = ProfilingSummary()
    if shards:
        summary = profile_shards(
            [s.url for s in shards],
            store,
            workers=workers,
            storage_options=storage_options,
            progress=active(),
            metadata=metadata,
            on_error=on_error,
        )
    failed = {url for url, _ in summary.failed}
    results = CheckResults(failed=[*missing, *summary.failed])
    for shard in track(shards, "checked"):
        if redact(shard.url) in failed:
            continue
        profile = store.get_profile(shard.url, shard.version)
        if profile is None:  # overwritten between stat and profiling: profile what is there now
            raise FileNotFoundError(f"{redact(shard.url)} changed while it was checked; run again")
        if profile.n == 0:  # nothing to compare: a data error, not drift of every feature
            empty = (redact(shard.url), "shard has no samples")
            if on_error == "raise":
                raise ValueError(f"{empty[0]}: {empty[1]}")
            results.failed.append(empty)
            continue
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
