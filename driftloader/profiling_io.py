"""Profiling's round trips, overlapped: a run of shards profiled one after another in order,
their sidecars and bytes read ahead and their profiles stored behind.

Profiling a shard on object storage is six round trips: its sidecar ``<url>.json`` (a GET,
usually a 404), its bytes, the profile's slot check and PUT, and its catalog row's GET and
PUT. One after another that was 273 ms a tiny shard behind 40 ms of latency, for 4 ms of
featurizing. ``overlapped`` keeps the next ``READ_AHEAD`` shards' sidecars and bytes asked for
(one ``reader.read_shards`` for the run: one fetcher, requests in flight under its bound)
and up to ``STORE_BEHIND`` profiles being stored on threads, while the calling thread
featurizes the shards in order, so the profiles are those of one shard at a time, bit for bit.

Outcomes come back in the shards' order, each once its profile is stored (or its shard
failed), so a caller never counts a profile that is not in the store. A shard that failed is
told before the next one is featurized: a caller that stops there stores none past it. A run
closed early (the caller raised) drops its reads and waits for the profiles already built to
be stored: each is one atomic PUT, never half written. The profiles being stored when a
process dies are at most ``STORE_BEHIND`` shards from the first one not stored, and
``stored_before`` finds those stored when the run is tried again. On local files one thread
does the reading ahead and storing behind (``io_threads``).

Example::

    for done in overlapped(shards, build, put, storage_options):
        done.shard, done.profile, done.path, done.error
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .catalog import json_safe
from .profile import Profile
from .reader import read_shards
from .records import SHARD_AT_A_TIME_INFLIGHT, read_records, record_format
from .shardversion import version_id_of
from .sources import Shard, protocol_of, read_small, redact

READ_AHEAD = 8  # shards whose sidecar and bytes are asked for before their turn
STORE_BEHIND = 16  # profiles built and not yet stored, at most (a GET and PUT each, twice)
LOCAL_THREADS = 1  # for sidecars and stores on local files (see ``io_threads``)
SIDECAR_SUFFIX = ".json"

Build = Callable[[Shard, "dict | None", Iterator[dict]], Profile]


# -- sidecars --------------------------------------------------------------------------------


def sidecar_url(url: str) -> str:
    """The metadata sidecar of a shard: ``<shard url>.json`` (``shard-000001.tar.json``)."""
    return url + SIDECAR_SUFFIX


def read_sidecar(url: str, storage_options: dict | None = None) -> dict | None:
    """The JSON object in the shard's sidecar, or None when there is none.

    A missing sidecar is normal (None, silently). One that cannot be read or is not a JSON object
    gives a ``RuntimeWarning`` naming its path and is ignored (None).
    """
    return sidecar_from(url, sidecar_bytes(url, storage_options))


def sidecar_bytes(url: str, storage_options: dict | None = None) -> bytes | Exception | None:
    """The sidecar's bytes (one GET: ``open`` would ask its size first), None when there is
    none, or the error that reading it raised: safe to call on any thread, as nothing warns."""
    try:
        return read_small(sidecar_url(url), storage_options)
    except FileNotFoundError:
        return None
    except Exception as e:  # unreadable: metadata is optional, profiling goes on (warned)
        return e


def sidecar_from(url: str, got: bytes | Exception | None) -> dict | None:
    """The sidecar's JSON object from what ``sidecar_bytes`` got; a ``RuntimeWarning`` naming
    its path for one that could not be read or is not a JSON object (then None)."""
    path = sidecar_url(url)
    if got is None:
        return None
    if isinstance(got, Exception):
        message = f"ignoring unreadable metadata sidecar {redact(path)}: {got}"
        warnings.warn(message, RuntimeWarning, 3)
        return None
    try:
        meta = json.loads(got)
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    except ValueError as e:
        warnings.warn(f"ignoring invalid metadata sidecar {redact(path)}: {e}", RuntimeWarning, 3)
        return None
    return json_safe(meta)


# -- a run of shards -------------------------------------------------------------------------


def read_target(shard: Shard) -> Shard:
    """The shard to read: pinned to its S3 VersionId so the bytes match the version we key by."""
    if version_id_of(shard.version) and not shard.pinned:
        return dataclasses.replace(shard, pinned=True)
    return shard


def samples_in_order(
    shards: Sequence[Shard], storage_options: dict | None = None, lookahead: int = READ_AHEAD
) -> Iterator[tuple[Shard, Iterator[dict]]]:
    """``(shard, samples)`` for each of ``shards`` in order: tar shards through one
    ``read_shards`` reading ``lookahead`` shards ahead, record files (JSON lines, Parquet)
    one at a time. Read each ``samples`` before asking for the next pair; a shard that fails
    raises ``ShardReadError`` from its ``samples``, and the next pair still comes."""
    tars = [read_target(s) for s in shards if record_format(s.url) is None]
    pairs = read_shards(
        tars, storage_options, max_inflight=SHARD_AT_A_TIME_INFLIGHT, lookahead=lookahead
    )
    with contextlib.closing(pairs):
        for shard in shards:
            if record_format(shard.url) is not None:
                yield shard, read_records(read_target(shard), storage_options)
            else:
                yield shard, next(pairs)[1]


def io_threads(shards: Sequence[Shard], local_store: bool) -> int:
    """Threads for a run's sidecar reads and profile writes: ``LOCAL_THREADS`` when the store
    and every shard are local files, which answer in microseconds (one thread hides fsync's
    wait; more only contend for the interpreter: 3.29 against 2.83 ms of CPU a tiny shard),
    else one for each sidecar read ahead and each profile stored behind."""
    if local_store and all(protocol_of(s.url) == "file" for s in shards):
        return LOCAL_THREADS
    return READ_AHEAD + STORE_BEHIND


@dataclass
class Done:
    """One shard of a run: its stored ``profile`` and the ``path`` it is stored at, or the
    ``error`` that reading, featurizing or storing it raised (then ``profile`` is None)."""

    shard: Shard
    profile: Profile | None = None
    path: str | None = None
    error: Exception | None = None


def overlapped(
    shards: Sequence[Shard],
    build: Build,
    put: Callable[[Profile], str | None],
    storage_options: dict | None = None,
    threads: int = READ_AHEAD + STORE_BEHIND,
) -> Iterator[Done]:
    """Profile ``shards`` in order (see the module): ``build(shard, sidecar, samples)`` on this
    thread makes each one's profile from its sidecar's JSON object (None when it has none)
    and its samples; ``put(profile)`` stores it on a thread and returns
    its path, on one of ``threads`` threads (``io_threads``). Yields a ``Done`` for each shard,
    in order, once its profile is stored."""
    if not shards:
        return
    pool = ThreadPoolExecutor(threads, "driftloader-profile")
    upcoming = iter(shards)
    found: deque[Future] = deque()  # the sidecars of this shard and the next ones
    storing: deque[tuple[Done, Future | None]] = deque()
    try:
        for shard, samples in samples_in_order(shards, storage_options):
            while len(found) <= READ_AHEAD:
                ahead = next(upcoming, None)
                if ahead is None:
                    break
                found.append(pool.submit(sidecar_bytes, ahead.url, storage_options))
            done = Done(shard)
            try:
                sidecar = sidecar_from(shard.url, found.popleft().result())
                done.profile = build(shard, sidecar, samples)
            except Exception as e:  # told before the next shard is built: a caller
                done.error = e  # that stops at a bad shard stores none past it
                storing.append((done, None))
            else:
                storing.append((done, pool.submit(put, done.profile)))
            yield from _finished(storing, keep=0 if done.error else STORE_BEHIND)
        yield from _finished(storing, keep=0)
    finally:
        for future in found:
            future.cancel()
        pool.shutdown(wait=True)  # the profiles built are stored (each one atomic PUT)


def _finished(storing: deque[tuple[Done, Future | None]], keep: int) -> Iterator[Done]:
    """The run's oldest shards whose profiles are stored, in order; waits for the oldest
    while more than ``keep`` are queued."""
    while storing:
        done, write = storing[0]
        if write is not None:
            if len(storing) <= keep and not write.done():
                return
            try:
                done.path = write.result()
            except Exception as e:
                done.profile, done.error = None, e
        storing.popleft()
        yield done


def stored_before(
    shards: Sequence[Shard], stored: Callable[[Shard], Any], threads: int = STORE_BEHIND
) -> dict[int, Any]:
    """The shards of a run tried again that the run before it stored: ``{index: stored(shard)}``
    for those where ``stored`` is not None (an error it raised is kept as the value).

    A run stores its shards in order, ``STORE_BEHIND`` at a time: every shard before the first
    one not stored, and some of the ``STORE_BEHIND`` from it. They are asked about that many
    at a time, on ``threads`` threads (``io_threads``: on local files, one after another),
    until ``STORE_BEHIND`` in a row are not stored: one round trip for a run that is not a
    retry."""
    found: dict[int, Any] = {}

    def ask(shard: Shard) -> Any:
        try:
            return stored(shard)
        except Exception as e:
            return e

    with contextlib.ExitStack() as stack:
        pool = None
        if threads > 1:
            pool = stack.enter_context(ThreadPoolExecutor(threads, "driftloader-stored"))
        start = missing = 0
        while start < len(shards) and missing < STORE_BEHIND:
            window = shards[start : start + STORE_BEHIND]
            answers = map(ask, window) if pool is None else pool.map(ask, window)
            for i, answer in enumerate(answers, start):
                if answer is None:
                    missing += 1
                else:
                    found[i], missing = answer, 0
            start += len(window)
    return found


__all__ = [
    "READ_AHEAD",
    "SIDECAR_SUFFIX",
    "STORE_BEHIND",
    "LOCAL_THREADS",
    "Done",
    "io_threads",
    "overlapped",
    "read_sidecar",
    "read_target",
    "samples_in_order",
    "sidecar_bytes",
    "sidecar_from",
    "sidecar_url",
    "stored_before",
]
