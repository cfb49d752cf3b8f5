"""Checking shards against a stored reference: profile what is not stored yet, then compare."""

from __future__ import annotations

import contextlib
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import chain
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
from .store import FETCH_CHUNK, ProfileStore, featurizer_of, recorded_featurizer
from .writebehind import WriteBehind

CHECK_CHUNK = FETCH_CHUNK  # stored profiles read (and held) at a time


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
    details: bool = True,
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
    the store is compacted. ``details=False`` leaves out each feature's per-test ``detail``
    from the results: with it, every result holds ~35 KB, 3.5 GB over 100k shards; without,
    ~18 KB. To hold none of them, iterate ``iter_checks`` (same arguments) instead.
    """
    run = iter_checks(
        urls,
        store,
        reference,
        config=config,
        storage_options=storage_options,
        workers=workers,
        record=record,
        executor=executor,
        metadata=metadata,
        on_error=on_error,
        featurizer=featurizer,
        details=details,
    )
    verdicts = dict(run.indexed())
    return CheckResults([verdicts[i] for i in sorted(verdicts)], failed=run.failed)


def iter_checks(
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
    details: bool = True,
) -> CheckStream:
    """``check_shards`` one result at a time: iterate the returned ``CheckStream`` for each
    shard's ``ShardDrift`` as it is compared (and recorded). Nothing is kept, so a check over a
    million shards holds a few chunks of profiles, not a million results. The reference, the
    shards' versions and the decision index are read here, so a missing reference raises
    before the first result."""
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
    index = DecisionIndex.of(store, reference, ref, config) if record and store.writable else None
    if index is not None:
        index.load_all()
    check = _Check(store, reference, ref, config, record, details, index)
    return CheckStream(check, shards, (workers, executor), options, missing)


class CheckStream:
    """The results of ``iter_checks``, yielded in the order shards are checked: those with a
    stored profile first, in the order given, then those profiled now. Iterate it once; after
    the loop ``failed`` lists the shards that could not be read (under ``on_error="skip"``) as
    ``(url, message)``. Leaving the loop early records what was yielded and stops there
    (``close``)."""

    def __init__(
        self,
        check: _Check,
        shards: list[Shard],
        runner: tuple[int, ExecutorSpec],
        options: dict,
        failed: list[tuple[str, str]],
    ) -> None:
        self._check, self._shards, self._runner, self._options = check, shards, runner, options
        self.failed = failed
        self._started = False
        self._running: weakref.ref | None = None  # left to the loop: freed when it ends

    def __len__(self) -> int:
        """The shards to check (the results will be fewer by ``failed``)."""
        return len(self._shards)

    def __iter__(self) -> Iterator[ShardDrift]:
        running = self.indexed()
        self._running = weakref.ref(running)
        return (result for _, result in running)

    def close(self) -> None:
        """End a loop left early: what was yielded is recorded, and a record that failed is
        raised here (when the loop is simply let go, it is closed as it is freed, and such an
        error is only printed). ``with iter_checks(...) as run:`` calls it."""
        running = None if self._running is None else self._running()
        if running is not None:
            running.close()

    def __enter__(self) -> CheckStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def indexed(self) -> Iterator[tuple[int, ShardDrift]]:
        """``(i, result)``: ``i`` is the shard's place among the shards given."""
        if self._started:
            raise RuntimeError("a CheckStream is iterated once: call iter_checks again")
        self._started = True
        shards, failed, check = self._shards, self.failed, self._check
        profiles = _each_profile(shards, check.store, self._runner, self._options, failed)
        writes = WriteBehind.for_batch()
        try:
            for i, profile in profiles:
                result = check.compare(shards[i], profile, failed, self._options["on_error"])
                if result is not None:
                    if check.record:  # three small requests: many shards' at once
                        writes.submit(shards[i].url, check.keep, shards[i], result, profile.n)
                    yield i, result if check.details else without_details(result)
        except GeneratorExit:  # the loop left early: what was yielded is recorded
            writes.flush()
            raise
        except BaseException:  # failed: the queued records are finished, the failure raised
            with contextlib.suppress(Exception):
                writes.flush()
            raise
        writes.flush()
        if check.index is not None:
            compact_if_large(check.store, check.index)


class _Check:
    """What comparing and recording one shard needs: the store, the reference and its
    decision index (``None`` when nothing is recorded)."""

    def __init__(
        self,
        store: ProfileStore,
        name: str,
        ref: Profile,
        config: DriftConfig | None,
        record: bool,
        details: bool,
        index: DecisionIndex | None,
    ) -> None:
        self.store, self.name, self.ref, self.config = store, name, ref, config
        self.record, self.details, self.index = record, details, index

    def compare(
        self, shard: Shard, profile: Profile, failed: list, on_error: str
    ) -> ShardDrift | None:
        """``profile`` compared with the reference, or ``None`` when it is empty."""
        if profile.n == 0:  # stored by an older version: an empty shard is a data error
            if on_error == "raise":
                raise EmptyShardError(f"{redact(shard.url)}: {EMPTY_SHARD}")
            failed.append((redact(shard.url), EMPTY_SHARD))
            return None
        return compare(profile, self.ref, self.config)

    def keep(self, shard: Shard, result: ShardDrift, n: int) -> None:
        """Record a check in the catalog and in the decision index (from which the gate
        decides the shard without loading its profile)."""
        _record(self.store, shard, self.name, result)
        index = self.index
        if index is not None:
            known = index.get(shard.url, shard.version)
            if index.add(shard.url, shard.version, n, result) == known and known.row is not None:
                index.mark_row(known, None)  # the row holds this check now, not a gate's decision


def without_details(result: ShardDrift) -> ShardDrift:
    """``result`` with no feature's per-test ``detail`` (the summary fields kept)."""
    features = [replace(f, detail={}) for f in result.features]
    return replace(result, features=features)


def _each_profile(
    shards: list[Shard],
    store: ProfileStore,
    runner: tuple[int, ExecutorSpec],
    options: dict,
    failed: list[tuple[str, str]],
) -> Iterator[tuple[int, Profile]]:
    """``(i, profile)`` of every readable shard ``shards[i]``, never all of them in memory at
    once (at 10k tiny shards that took 1.1 GB): the stored profiles first, read in chunks
    (``fetch_profile_chunks``, each read once); then the shards without one are profiled into
    the store (``profile_shards``, on ``runner``: workers, executor) and read back in chunks;
    what the store still does not give back (it is read-only, or a stored profile is corrupt)
    is profiled here. Shards that fail are appended to ``failed``."""
    fingerprint = options["featurizer"].fingerprint
    unstored: list[int] = []
    stored = chain.from_iterable(store.fetch_profile_chunks(shards, fingerprint, CHECK_CHUNK))
    for i, profile in track(enumerate(stored), "checked", total=len(shards)):
        if profile is None:
            unstored.append(i)
        else:
            yield i, profile
    if unstored and store.writable:
        try:
            summary = profile_shards(
                [shards[i].url for i in unstored],
                store,
                workers=runner[0],
                executor=runner[1],
                progress=active(),
                **options,
            )
            failed.extend(summary.failed)
        except StoreReadOnlyError as e:  # refused in a worker: profile in memory below
            store.mark_read_only(str(e))
    gone = {url for url, _ in failed}
    todo = [i for i in unstored if redact(shards[i].url) not in gone]
    again = store.fetch_profile_chunks([shards[i] for i in todo], fingerprint, CHECK_CHUNK)
    for i, profile in zip(todo, chain.from_iterable(again)):
        found = profile if profile is not None else _profile_here(shards[i], store, options)
        if isinstance(found, tuple):
            failed.append(found)
        else:
            yield i, found


def _profile_here(shard: Shard, store: ProfileStore, options: dict) -> Profile | tuple[str, str]:
    """Profile ``shard`` in this process (stored if the store takes it), or ``(url, message)``
    when it failed."""
    now = stat_shard(Shard(shard.url), options["storage_options"])
    if now.version != shard.version:  # overwritten since it was listed: never mislabel bytes
        message = "changed while it was checked; run again"
        if options["on_error"] == "raise":
            raise FileNotFoundError(f"{redact(shard.url)} {message}")
        return (redact(shard.url), message)
    profile = profile_shard(shard, None, **options)  # raises under on_error="raise"
    if "read_error" in profile.meta:
        return (redact(shard.url), str(profile.meta["read_error"]))
    if store.writable:
        store.put_profile(profile)
    return profile


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
