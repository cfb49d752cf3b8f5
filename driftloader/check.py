"""Checking shards against a stored reference: profile what is not stored yet, then compare."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

from .catalog import CatalogRow
from .decisions import DecisionIndex, compact_if_large
from .drift import DriftConfig, ShardDrift, compare
from .errors import EmptyShardError, StoreReadOnlyError
from .executors import ExecutorSpec
from .handlers import on_error_name
from .profile import Profile
from .profiling import EMPTY_SHARD, ON_ERROR, Metadata, profile_shard, profile_shards
from .progress import active, track
from .sources import Shard, expand_urls, redact, stat_shard, stat_shards
from .store import ProfileStore, featurizer_of, recorded_featurizer
from .writebehind import WriteBehind

RECORD_THREADS = 16  # shards recorded at once: each is a catalog read and write and a record


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
    executor: ExecutorSpec = None,
    metadata: Metadata = None,
    on_error: str = "raise",
    featurizer: Any = None,
) -> CheckResults:
    """Compare every shard of ``urls`` (at its current version) with reference ``reference``.

    Shards without a stored profile at their current version are profiled first (and stored,
    so the next check or training run reuses them), with their metadata (sidecar ``<url>.json``
    and ``metadata``, see ``profiling.shard_metadata``); so is a shard whose stored profile
    is corrupt (with a warning naming the file). Results are recorded in the catalog. On a
    read-only store nothing is stored: missing profiles are made in memory (in this process)
    and results are only returned. A shard that cannot be read raises ``ShardReadError``, one
    with no samples ``EmptyShardError``; with ``on_error="skip"`` they are listed in the
    result's ``failed`` and the other shards are still checked. Shards are profiled with the
    reference's featurizer (``recorded_featurizer``) unless ``featurizer`` is given; a shard
    stored only with another featurizer's profile is profiled again (one warning line).
    Each result also goes to the decision index (``decisions.py``), so the loader's gate
    decides these shards without loading their profiles; past ``COMPACT_OVER`` small records
    the store is compacted.
    """
    on_error_name(on_error, ON_ERROR)
    ref = store.get_reference(reference)
    featurizer = featurizer_of(featurizer) if featurizer is not None else recorded_featurizer(ref)
    missing: list[tuple[str, str]] = []
    shards = stat_shards(
        expand_urls(urls, storage_options),
        storage_options,
        failed=missing if on_error == "skip" else None,
    )
    options = {
        "storage_options": storage_options,
        "metadata": metadata,
        "on_error": on_error,
        "featurizer": featurizer,
    }
    profiles, failed = _profiles(shards, store, (workers, executor), options)
    results = CheckResults(failed=[*missing, *failed])
    index = DecisionIndex.of(store, reference, ref, config) if record and store.writable else None
    if index is not None:
        index.load_all()
    writes = WriteBehind(RECORD_THREADS, 4 * RECORD_THREADS)
    for shard in track(shards, "checked"):
        profile = profiles.get((shard.url, shard.version))
        if profile is None:
            continue
        if profile.n == 0:  # stored by an older version: an empty shard is a data error
            if on_error == "raise":
                raise EmptyShardError(f"{redact(shard.url)}: {EMPTY_SHARD}")
            results.failed.append((redact(shard.url), EMPTY_SHARD))
            continue
        result = compare(profile, ref, config)
        results.append(result)
        if record:  # three small requests: many shards' at once, not one after the other
            writes.submit(shard.url, _keep, store, index, shard, reference, result, profile.n)
    writes.flush()
    if index is not None:
        compact_if_large(store, index)
    return results


def _profiles(
    shards: list[Shard], store: ProfileStore, runner: tuple[int, ExecutorSpec], options: dict
) -> tuple[dict[tuple[str, str | None], Profile], list[tuple[str, str]]]:
    """The profile of every readable shard, by (url, version), and the shards that failed.

    Stored profiles are read once, in batches (``fetch_profiles``); only the shards without
    one are profiled into the store (``profile_shards``) and read back; what the store still
    does not give back (it is read-only, or a stored profile is corrupt) is profiled here."""
    fingerprint = options["featurizer"].fingerprint
    profiles = dict(
        zip([(s.url, s.version) for s in shards], store.fetch_profiles(shards, fingerprint))
    )
    unstored = [s for s in shards if profiles[(s.url, s.version)] is None]
    failed: list[tuple[str, str]] = []
    if unstored and store.writable:
        try:
            summary = profile_shards(
                [s.url for s in unstored],
                store,
                workers=runner[0],
                executor=runner[1],
                progress=active(),
                **options,
            )
            failed = list(summary.failed)
        except StoreReadOnlyError as e:  # refused in a worker: profile in memory below
            store.mark_read_only(str(e))
    gone = {url for url, _ in failed}
    todo = [s for s in unstored if redact(s.url) not in gone]
    for shard, profile in zip(todo, store.fetch_profiles(todo, fingerprint) if todo else []):
        profiles[(shard.url, shard.version)] = profile
    for shard in todo:
        if profiles[(shard.url, shard.version)] is None:
            profile = _profile_here(shard, store, options, failed)
            if profile is not None:
                profiles[(shard.url, shard.version)] = profile
    return profiles, failed


def _profile_here(
    shard: Shard, store: ProfileStore, options: dict, failed: list[tuple[str, str]]
) -> Profile | None:
    """Profile ``shard`` in this process (stored if the store takes it); None when it failed."""
    now = stat_shard(Shard(shard.url), options["storage_options"])
    if now.version != shard.version:  # overwritten since it was listed: never mislabel bytes
        message = "changed while it was checked; run again"
        if options["on_error"] == "raise":
            raise FileNotFoundError(f"{redact(shard.url)} {message}")
        failed.append((redact(shard.url), message))
        return None
    profile = profile_shard(shard, None, **options)  # raises under on_error="raise"
    if "read_error" in profile.meta:
        failed.append((redact(shard.url), str(profile.meta["read_error"])))
        return None
    if store.writable:
        store.put_profile(profile)
    return profile


def _keep(
    store: ProfileStore,
    index: DecisionIndex | None,
    shard: Shard,
    reference: str,
    result: ShardDrift,
    n: int,
) -> None:
    """Record a check in the catalog and in the decision index (from which the gate decides
    the shard without loading its profile)."""
    _record(store, shard, reference, result)
    if index is not None:
        index.add(shard.url, shard.version, n, result)


def _record(store: ProfileStore, shard: Shard, reference: str, result: ShardDrift) -> None:
    """Record a check in the catalog; a store that cannot take it warns (the result stands)."""
    row = CatalogRow(
        shard.url,
        shard.version,
        reference=reference,
        action="checked",
        drifted=bool(result.drifted),
        score=float(result.score),
        top=[f.to_dict() for f in result.top(5)],
        decided=time.time(),
    )
    try:
        store.record(row)
    except OSError as e:  # a timeout, say: the comparison succeeded all the same
        warnings.warn(
            f"check of {redact(shard.url)} not recorded in {store!r}: {e}", RuntimeWarning, 3
        )
