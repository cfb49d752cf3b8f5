"""Profiling shards: stream samples -> featurize in batches -> one ``Profile`` per shard version.

``ShardProfiler`` is the incremental builder (the loader's gate feeds it as samples stream by);
``profile_shard`` reads one whole shard; ``profile_shards`` profiles many in worker processes,
skipping shards already stored at their current version (so an interrupted run resumes).

Worker processes are started with ``spawn`` (never ``fork``: fsspec clients do not survive it)
and receive only picklable arguments: the shard, the store's URL and options, the featurizer.
A shard that fails mid-read is never stored: a half profile must never look complete.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .catalog import json_safe
from .compaction import compaction_due
from .errors import EmptyShardError, ProfileFormatError, ShardReadError, StoreReadOnlyError
from .executors import ExecutorSpec, error_text, map_chunked, resolved
from .features import FeatureBatch, featurizer_from
from .handlers import on_error_name
from .packs import PackWriter
from .profile import Profile, ProfileConfig
from .profiling_io import (
    io_threads,
    overlapped,
    read_sidecar,
    read_target,
    stored_before,
)
from .progress import Progress
from .records import read_samples
from .sources import (
    Shard,
    redact,
    shards_of,
    stat_shard,
    stat_shards,
)
from .store import ProfileStore, profiled, read_profiled, shard_key, source_label, unique_shards
from .thumbnails import add_thumbnails

ON_ERROR = ("raise", "skip")  # the names of handlers.ON_ERROR that profiling takes
PROGRESS_INTERVAL = 0.5
EMPTY_SHARD = "shard has no samples (an empty tar): nothing to profile"
PARENT_POLL = 0.2  # seconds between a worker's checks that the process that started it lives

Metadata = dict[str, dict] | Callable[[str], dict | None] | None


def _user_metadata(url: str, metadata: Metadata) -> dict | None:
    """The user's metadata of shard ``url``: ``metadata[url]`` or ``metadata(url)``."""
    if metadata is None:
        return None
    if callable(metadata):
        found = metadata(url)
    elif isinstance(metadata, dict):
        found = None
        for key in dict.fromkeys((url, redact(url), shard_key(url))):
            if key in metadata:
                found = metadata[key]
                break
    else:
        raise ValueError(
            f"metadata must be a dict keyed by shard URL or a callable, got {metadata!r}"
        )
    if found is None:
        return None
    if not isinstance(found, dict):
        raise ValueError(f"metadata of {redact(url)} must be a dict, got {type(found).__name__}")
    try:
        return json.loads(json.dumps(json_safe(found), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata of {redact(url)} must be JSON-serializable: {e}") from e


def shard_metadata(
    url: str,
    metadata: Metadata = None,
    storage_options: dict | None = None,
    sidecar: bool = True,
) -> dict | None:
    """A shard's metadata (source, preprocessing fingerprint, writer, creation time, ...).

    The sidecar ``<url>.json`` (read with ``storage_options`` when ``sidecar``), updated with the
    user's ``metadata`` (a dict keyed by shard URL, or a callable of the URL; user keys win).
    None when neither has anything. Storage options are never part of it.
    """
    found = read_sidecar(url, storage_options) if sidecar else None
    return with_user_metadata(url, found, metadata)


def with_user_metadata(url: str, found: dict | None, metadata: Metadata) -> dict | None:
    """The sidecar's metadata ``found`` (or None) updated with the user's ``metadata`` for
    ``url`` (user keys win); None when neither has anything."""
    user = _user_metadata(url, metadata)
    if user is not None:
        found = {**(found or {}), **user}
    return found


def profile_meta(featurizer: Any, metadata: dict | None) -> dict:
    """A new shard profile's ``meta``: the shard's ``metadata`` (when it has some) and the
    ``FeatureSpec`` of its featurizer as JSON under ``"featurizer"`` (when it has one), so a
    reference merged from the profiles records the featurizer they were made with."""
    meta: dict = {} if metadata is None else {"metadata": metadata}
    spec = getattr(featurizer, "spec", None)
    if spec is not None:
        meta["featurizer"] = spec.to_dict()
    return meta


class ShardProfiler:
    """Builds one shard's profile incrementally as samples stream by (used by the loader's gate too).

    Samples are buffered and featurized ``batch_size`` at a time; ``profile`` is up to date
    after ``flush()``. ``add_batch`` featurizes a list at once and returns its features. Values the featurizer could not parse count as ``profile.errors``.

    ``metadata`` (a dict keyed by shard URL, or a callable of the URL) and, with ``sidecar``,
    the shard's ``<url>.json`` sidecar (read with ``storage_options``) give the shard's metadata,
    kept as ``profile.meta["metadata"]``; its ``"source"`` sets ``profile.source`` unless
    ``source`` is given. See ``shard_metadata``.

    Example::

        profiler = ShardProfiler(shard)
        for sample in read_shard(shard):
            profiler.add(sample)
        profile = profiler.finish()
    """

    def __init__(
        self,
        shard: Shard,
        featurizer: Any = None,
        config: ProfileConfig | None = None,
        batch_size: int = 256,
        source: str | None = None,
        metadata: Metadata = None,
        storage_options: dict | None = None,
        sidecar: bool = False,
    ) -> None:
        if isinstance(shard, str):
            shard = Shard(shard)
        if not isinstance(shard, Shard):
            raise ValueError(f"shard must be a Shard or URL, got {shard!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.shard = shard
        self.featurizer = featurizer_from(featurizer)
        self.batch_size = batch_size
        meta = shard_metadata(shard.url, metadata, storage_options, sidecar)
        if source is None and meta is not None and isinstance(meta.get("source"), str):
            source = meta["source"]
        self.profile = Profile(
            self.featurizer.fingerprint,
            url=shard.url,
            version=shard.version,
            source=source if source is not None else source_label(shard_key(shard.url)),
            config=config,
            meta=profile_meta(self.featurizer, meta),
        )
        self._buffer: list[dict] = []

    def add(self, sample: dict) -> None:
        """Buffer one sample; featurize and sketch when a batch is full."""
        self._buffer.append(sample)
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def add_many(self, samples: Sequence[dict]) -> None:
        """Buffer many samples (featurized in batches of ``batch_size``)."""
        for sample in samples:
            self.add(sample)

    def add_batch(self, samples: Sequence[dict]) -> FeatureBatch:
        """Featurize and sketch ``samples`` now (after anything buffered); returns their features.

        For callers that need the feature columns too (the gate's probe and reweighting).
        """
        self.flush()
        return self._consume(list(samples))

    def flush(self) -> None:
        """Featurize and sketch whatever is buffered."""
        if self._buffer:
            samples, self._buffer = self._buffer, []
            self._consume(samples)

    def _consume(self, samples: list[dict]) -> FeatureBatch:
        before = int(getattr(self.featurizer, "errors", 0) or 0)
        batch = self.featurizer(samples)
        self.profile.update(batch, n_samples=len(samples))
        add_thumbnails(self.profile.thumbnails, samples)
        after = int(getattr(self.featurizer, "errors", 0) or 0)
        if after > before:
            self.profile.count_errors(after - before)
        return batch

    def finish(self) -> Profile:
        """Flush and return the profile."""
        self.flush()
        return self.profile


def _check_on_error(on_error: str) -> str:
    return on_error_name(on_error, ON_ERROR)


def profile_shard(
    shard: Shard | str,
    store: ProfileStore | None = None,
    *,
    featurizer: Any = None,
    config: ProfileConfig | None = None,
    storage_options: dict | None = None,
    on_error: str = "raise",
    metadata: Metadata = None,
    sidecar: bool = True,
) -> Profile:
    """Read the whole shard, build its profile and put it in ``store`` if given.

    The shard's metadata (its ``<url>.json`` sidecar when ``sidecar``, and ``metadata``: a dict
    keyed by shard URL or a callable of the URL) goes to ``profile.meta["metadata"]``.

    ``on_error="skip"``: a ``ShardReadError`` mid-shard gives the partial profile with
    ``errors += 1`` and ``meta["read_error"]``; it is returned but never stored.

    A shard with no samples (a valid, empty tar) is a data error, in ``profile`` and ``check``
    alike: ``EmptyShardError`` (under ``"skip"``: returned with ``meta["read_error"]``), and no
    profile is stored, so that it can never go into a reference nor pass a check.
    """
    _check_on_error(on_error)
    shard = Shard(shard) if isinstance(shard, str) else shard
    if shard.version is None:
        shard = stat_shard(shard, storage_options)
    profiler = ShardProfiler(
        shard,
        featurizer,
        config,
        metadata=metadata,
        storage_options=storage_options,
        sidecar=sidecar,
    )
    try:
        for sample in read_samples(read_target(shard), storage_options):
            profiler.add(sample)
    except ShardReadError as e:
        if on_error == "raise":
            raise
        profile = profiler.finish()
        profile.count_errors(1)
        profile.meta["read_error"] = str(e)
        return profile
    profile = profiler.finish()
    if profile.n == 0:  # the rule for profile and check alike: an empty shard is a data error
        error = EmptyShardError(f"{redact(shard.url)}: {EMPTY_SHARD}")
        if on_error == "raise":
            raise error
        profile.meta["read_error"] = str(error)
        return profile
    if store is not None:
        exit_if_orphaned()
        store.put_profile(profile, strict=True)
    return profile


# -- many shards ----------------------------------------------------------------------------


@dataclass
class ProfilingSummary:
    """What ``profile_shards`` did."""

    profiled: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """One human line: ``profiled N shards (M samples) in T s; K skipped ...; E failed``."""
        return (
            f"profiled {self.profiled} shards ({self.samples:,} samples) in {self.seconds:.1f} s; "
            f"{self.skipped} skipped as already profiled; {len(self.failed)} failed"
        )


@dataclass(frozen=True)
class _Outcome:
    """A worker's answer: picklable, small (never the profile itself)."""

    url: str
    samples: int = 0
    error: str | None = None
    message: str | None = None
    offset: int | None = None
    kind: str = "read"  # what failed: "read" (the shard), "empty" (no samples), "store"
    stored_before: bool = False  # found in the store (a retried task): not profiled again


def _close_packs(writer: PackWriter) -> None:
    """Write the last pack; a failure costs only later reads (the profiles are stored), so it
    is a warning."""
    exit_if_orphaned()
    try:
        writer.close()
    except Exception as e:
        warnings.warn(f"profiles stored, but not their pack: {e}", RuntimeWarning, stacklevel=2)


def _build(
    featurizer: Any,
    config: ProfileConfig | None,
    metadata: Metadata,
    shard: Shard,
    sidecar: dict | None,
    samples: Iterator[dict],
) -> Profile:
    """``shard``'s profile from its samples (``overlapped``'s ``build``), as ``profile_shard``
    makes it: ``EmptyShardError`` for a shard with no samples."""
    exit_if_orphaned()
    found = with_user_metadata(shard.url, sidecar, metadata)
    profiler = ShardProfiler(
        shard, featurizer, config, metadata=None if found is None else {shard.url: found}
    )
    for sample in samples:
        profiler.add(sample)
    profile = profiler.finish()
    if profile.n == 0:
        raise EmptyShardError(f"{redact(shard.url)}: {EMPTY_SHARD}")
    return profile


def _put(store: ProfileStore, profile: Profile) -> str | None:
    exit_if_orphaned()
    return store.put_profile(profile, strict=True)


def _profiled(
    shards: list[Shard],
    store: ProfileStore,
    writer: PackWriter,
    featurizer: Any,
    config: ProfileConfig | None,
    storage_options: dict | None,
    metadata: Metadata = None,
) -> Iterator[tuple[Shard, _Outcome | None, Exception | None]]:
    """Profile ``shards`` into ``store`` with their round trips overlapped
    (``profiling_io.overlapped``), each stored profile added to ``writer``'s pack. Yields
    ``(shard, outcome, None)``, in order; ``(shard, None, error)`` for an error that is not
    the shard's nor the store's (a bug, the user's metadata), which the caller reports."""
    build = partial(_build, featurizer, config, metadata)
    threads = io_threads(shards, store.local)
    for done in overlapped(shards, build, partial(_put, store), storage_options, threads=threads):
        shard, e = done.shard, done.error
        if e is None:
            plain = done.path == store.profile_path(shard.url, shard.version)
            writer.add(shard, done.profile, plain)
            yield shard, _Outcome(redact(shard.url), done.profile.n), None
        elif isinstance(e, ShardReadError):  # as data: ShardReadError does not survive pickling
            yield shard, _Outcome(e.url, 0, str(e), _bare_message(e), e.offset), None
        elif isinstance(e, EmptyShardError):
            yield shard, _Outcome(redact(shard.url), 0, EMPTY_SHARD, kind="empty"), None
        elif isinstance(e, StoreReadOnlyError):  # profiling cannot do its job: no shard can be
            yield shard, _Outcome(redact(shard.url), 0, str(e), kind="store"), None  # stored
        else:
            yield shard, None, e


def _stored(store: ProfileStore, fingerprint: str, shard: Shard) -> tuple[Profile, bool] | None:
    """The stored profile of ``shard`` by featurizer ``fingerprint`` (as ``get_profile``) and
    whether it is in the first slot; None when there is none."""
    plain = store.get_profile(shard.url, shard.version)
    if plain is None:  # a free first slot: no other featurizer's profile made one go beside it
        return None
    if plain.fingerprint == fingerprint:
        return plain, True
    try:  # beside it, keyed by the featurizer (one GET: the first slot is read already)
        document = store.read_json(store.profile_path(shard.url, shard.version, fingerprint))
        return None if document is None else (Profile.from_dict(document), False)
    except ProfileFormatError:  # corrupt: profiled again, which replaces it
        return None


def _profile_chunk(task: Callable, shards: list[Shard], args: tuple) -> list:
    """An executor task of profiling (``map_chunked``'s ``run``): ``task`` (``_profiled``) over
    the shards, then one pack of their stored profiles (``packs.py``). ``args`` start with
    the store's URL and options (the store and the pack are made here, in the worker). Unless
    ``force``, a retried task (its worker died) first finds the shards stored before
    (``stored_before``: one round trip for a task that is not a retry)."""
    store_url, store_options, featurizer, *rest, force = args
    exit_if_orphaned()
    store = ProfileStore(store_url, store_options)
    writer = PackWriter(store)
    out: list = []
    try:
        found = (
            {}
            if force
            else stored_before(
                shards,
                partial(_stored, store, featurizer.fingerprint),
                io_threads(shards, store.local),
            )
        )
        for i, answer in sorted(found.items()):
            shard = shards[i]
            if isinstance(answer, Exception):
                out.append((shard, None, error_text(answer)))
                continue
            profile, plain = answer
            writer.add(shard, profile, plain)
            out.append((shard, _Outcome(redact(shard.url), profile.n, stored_before=True), None))
        todo = [s for i, s in enumerate(shards) if i not in found]
        with contextlib.closing(task(todo, store, writer, featurizer, *rest)) as run:
            for shard, outcome, e in run:
                out.append((shard, outcome, None if e is None else error_text(e)))
    finally:
        _close_packs(writer)
    return out


def _bare_message(e: ShardReadError) -> str:
    """The message of ``e`` without its ``"<url> at byte N: "`` prefix."""
    where = f" at byte {e.offset}" if e.offset is not None else ""
    text = str(e)
    prefix = f"{e.url}{where}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def profile_shards(
    urls: str | Sequence[str] | Sequence[Shard],
    store: ProfileStore | str,
    *,
    workers: int = 1,
    featurizer: Any = None,
    config: ProfileConfig | None = None,
    storage_options: dict | None = None,
    on_error: str = "raise",
    progress: bool = True,
    force: bool = False,
    metadata: Metadata = None,
    executor: ExecutorSpec = None,
) -> ProfilingSummary:
    """Profile every shard of ``urls`` into ``store``: one profile per (shard, version).

    Shards already stored at their current version are skipped unless ``force`` (so a rerun
    resumes). ``workers > 1`` profiles shards in that many spawned processes. ``on_error``:
    ``"raise"`` raises ``ShardReadError`` naming the first failed shard (the rest are
    cancelled); ``"skip"`` lists failures in the summary and stores nothing for them.
    With ``progress`` a progress line goes to stderr, ending with the summary line.
    Each shard's metadata (sidecar ``<url>.json`` and ``metadata``, see ``shard_metadata``) is
    kept in its profile; with ``workers > 1`` a callable ``metadata`` must be picklable.
    ``executor`` (any ``concurrent.futures.Executor``, e.g. Dask's ``Client.get_executor()``,
    or ``"local:N"`` / ``"dask://HOST:PORT"``) runs the shards in tasks of many shards each;
    ``workers=N`` is the short form of ``executor="local:N"``. Each process featurizes one
    shard at a time, with the next shards' reads and its stores in flight
    (``profiling_io.overlapped``), so latency to the storage costs little.

    Example::

        store = ProfileStore("s3://bucket/drift")
        profile_shards("s3://bucket/train/shard-{000000..000127}.tar", store, workers=8)
    """
    if isinstance(store, (str, os.PathLike)):
        store = ProfileStore(store, storage_options)
    if not isinstance(store, ProfileStore):
        raise ValueError(f"store must be a ProfileStore or its URL, got {store!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    _check_on_error(on_error)
    if executor is None and workers > 1 and multiprocessing.current_process().daemon:
        warnings.warn(
            f"profile_shards(workers={workers}) in a daemonic process (a DataLoader worker?), "
            "which cannot start processes: profiling in this process instead",
            RuntimeWarning,
            stacklevel=2,
        )
        workers = 1
    featurizer = featurizer_from(featurizer)
    store.check_writable()
    started = time.monotonic()
    missing: list[tuple[str, str]] = []  # every unreadable shard is named, not just the first
    found = stat_shards(shards_of(urls, storage_options), storage_options, failed=missing)
    if missing and on_error == "raise":
        raise _unreadable(missing)
    shards = unique_shards(found)
    todo = shards if force else _unprofiled(store, shards, featurizer.fingerprint)
    summary = ProfilingSummary(skipped=len(shards) - len(todo), failed=missing)
    bar = Progress(len(todo), "profiled", enabled=progress)
    args = (store.url, store.storage_options, featurizer, config, storage_options, metadata)
    try:
        if executor is None and (workers == 1 or len(todo) <= 1):
            _run_inline(store, todo, args[2:], summary, on_error, bar)
        elif todo:
            _check_picklable(featurizer)
            _check_picklable(metadata, "metadata")
            with resolved(executor, min(workers, len(todo)), _local_pool) as pool:
                _run_pool(pool, todo, (*args, force), summary, on_error, bar)
        if summary.profiled:  # a catalog row each: the next run reads them in one request
            _compact_if_large(store)
    finally:
        summary.seconds = time.monotonic() - started
    bar.close(summary.line())
    return summary


def _unreadable(missing: list[tuple[str, str]]) -> ShardReadError:
    """One error naming every shard that could not be stat'ed."""
    url, message = missing[0]
    message = message[len(url) + 2 :] if message.startswith(f"{url}: ") else message
    if len(missing) > 1:
        others = "; ".join(m for _, m in missing[1:])
        message += f"; {len(missing) - 1} more cannot be read either: {others}"
    return ShardReadError(url, message)


LISTED_FROM = 256
"""From this many shards, which are profiled already is told by the catalog and a listing of
the store's profiles (``store.profiled``), not by reading every profile."""


def _compact_if_large(store: ProfileStore) -> None:
    """Compact the catalog (the only folder profiling writes to) when more than
    ``COMPACT_OVER`` small rows wait. Not ``decisions.compact_store``, which also folds the
    decision indexes and imports the drift tests (scipy, 0.22 s) to do so."""
    if compaction_due(store):
        store.compact_catalog()


def _unprofiled(store: ProfileStore, shards: list[Shard], fingerprint: str) -> list[Shard]:
    if len(shards) >= LISTED_FROM:
        _compact_if_large(store)  # a catalog of small rows costs a GET a row, as profiles do
        have = profiled(store, shards, fingerprint)
    else:
        have = read_profiled(store, shards, fingerprint)
    return [s for s, h in zip(shards, have) if not h]


def _check_picklable(featurizer: Any, what: str = "featurizer") -> None:
    try:
        pickle.dumps(featurizer)
    except Exception as e:
        raise ValueError(
            f"{what} {featurizer!r} cannot be sent to worker processes ({e}); "
            "use a module-level function or a FeatureSpec, or workers=1"
        ) from e


def _account(summary: ProfilingSummary, outcome: _Outcome, on_error: str, bar: Progress) -> None:
    """Add one shard's outcome to the summary; raise on failure under ``on_error="raise"``."""
    if outcome.kind == "store":  # not a problem of the shard: no other shard can be stored
        raise StoreReadOnlyError(outcome.error)
    if outcome.error is not None:
        if on_error == "raise" and outcome.kind == "empty":
            raise EmptyShardError(f"{outcome.url}: {outcome.error}")
        if on_error == "raise":
            raise ShardReadError(outcome.url, outcome.message or outcome.error, outcome.offset)
        summary.failed.append((outcome.url, outcome.error))
    else:
        summary.profiled += 1
        summary.samples += outcome.samples
    bar.update(summary.profiled + len(summary.failed), summary.samples)


def _local_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes that exit when this process is gone."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    )


def _run_inline(
    store: ProfileStore,
    todo: list[Shard],
    args: tuple,
    summary: ProfilingSummary,
    on_error: str,
    bar: Progress,
) -> None:
    """Profile ``todo`` in this process, a pack stored per ``PACK_SHARDS`` shards."""
    writer = PackWriter(store)
    try:
        with contextlib.closing(_profiled(todo, store, writer, *args)) as run:
            for shard, outcome, e in run:
                if e is not None:
                    if on_error == "raise":
                        raise e
                    outcome = _Outcome(redact(shard.url), 0, error_text(e))
                _account(summary, outcome, on_error, bar)
    finally:
        _close_packs(writer)


def _run_pool(
    pool: Executor,
    todo: list[Shard],
    args: tuple,
    summary: ProfilingSummary,
    on_error: str,
    bar: Progress,
) -> None:
    """Profile ``todo`` on ``pool`` in tasks of many shards (``executors.map_chunked`` with
    ``_profile_chunk``: each task also stores one pack of its shards' profiles)."""
    try:
        for shard, outcome, error in map_chunked(pool, _profiled, todo, args, _profile_chunk):
            if error is not None:
                if on_error == "raise":
                    raise RuntimeError(f"profiling {redact(shard.url)} failed: {error}")
                outcome = _Outcome(redact(shard.url), 0, error)
            _account(summary, outcome, on_error, bar)
    except BrokenProcessPool as e:
        raise RuntimeError(
            "a profiling worker process died; worker processes import the calling script "
            'again, so guard its top level with `if __name__ == "__main__":` (or pass '
            "workers=1)"
        ) from e


def exit_with_parent(parent: int, poll: float = PARENT_POLL) -> None:
    """In a worker process: exit as soon as process ``parent`` is gone (SIGKILLed, say), so that
    no worker goes on profiling, and storing profiles, for a run that no longer exists.

    A daemon thread compares ``os.getppid()`` with ``parent`` every ``poll`` seconds (an
    orphan is adopted by another process). Used as the profiling pool's initializer."""

    global _PARENT
    _PARENT = parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="driftloader-parent-watch", daemon=True).start()


_PARENT: int | None = None  # in a pool worker: the process that started it


def exit_if_orphaned() -> None:
    """In a pool worker whose parent is gone: exit now. Checked when a task starts and before
    a profile is stored, so that the tasks a worker had queued are not profiled and stored in
    the ``PARENT_POLL`` seconds before its watching thread notices."""
    if _PARENT is not None and os.getppid() != _PARENT:
        os._exit(1)
