"""Running store work on an executor: resolve one, partition shards into tasks, merge as a tree.

Any ``concurrent.futures.Executor`` works: a ``ProcessPoolExecutor``, a ``ThreadPoolExecutor``
for I/O-bound stores, or Dask's ``Client.get_executor()``. Tasks receive only picklable
arguments (the store, its config, lists of shards) and return small answers; the store is the
meeting point of the data. Partial reference profiles travel between tasks as JSON text.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .packs import MIN_BUILD_PACK, Pack, pack_document, write_pack
from .profile import Profile
from .reference import described, missing_profiles, origins

TASKS_PER_WORKER = 4  # enough tasks to balance load, few enough that overhead stays small
MAX_TASK_SHARDS = 512
QUEUED_PER_SLOT = 1  # a task waiting behind each running one: no idle round trip
MERGE_FANOUT = 16  # partial profiles merged per tree node
DEFAULT_WORKERS = 8  # assumed parallelism of an executor that does not say

ExecutorSpec = Executor | str | None


@dataclass(frozen=True)
class Partial:
    """A partial reference sent between tasks: the merged profile as JSON (None when no shard
    had one), the ``(url, version)`` of shards without a profile, their sources and
    preprocessing fingerprints."""

    profile: str | None
    missing: list
    sources: list
    preprocessing: list


def parse_executor(spec: str) -> tuple[str, Any]:
    """``"local:N"`` -> ("local", N); ``"dask://HOST:PORT"`` -> ("dask", "tcp://HOST:PORT")."""
    if not isinstance(spec, str):
        raise ValueError(f"executor must be an Executor or a string, got {spec!r}")
    if spec.startswith("local:"):
        count = spec[len("local:") :]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"executor {spec!r}: expected local:N with N >= 1 processes")
        return "local", int(count)
    if spec.startswith("dask://"):
        address = spec[len("dask://") :]
        if not address or ":" not in address:
            raise ValueError(f"executor {spec!r}: expected dask://HOST:PORT of a scheduler")
        return "dask", f"tcp://{address}"
    raise ValueError(f"executor {spec!r}: expected local:N or dask://HOST:PORT")


def local_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (fsspec clients do not survive ``fork``)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


@contextmanager
def resolved(
    executor: ExecutorSpec,
    workers: int = 1,
    make_pool: Callable[[int], Executor] = local_pool,
) -> Iterator[Executor | None]:
    """The executor to run on (None: inline in this process), shut down after if made here.

    ``executor`` is an ``Executor`` (used as is, never shut down), ``"local:N"`` (a pool from
    ``make_pool(N)``), ``"dask://HOST:PORT"`` or None: then ``workers > 1`` means
    ``"local:{workers}"``.
    """
    if isinstance(executor, Executor):
        yield executor
        return
    if executor is None:
        if workers <= 1:
            yield None
            return
        executor = f"local:{workers}"
    kind, value = parse_executor(executor)
    if kind == "local":
        pool = make_pool(value)
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    try:
        from distributed import Client
    except ImportError as e:
        raise ImportError(
            f"executor {executor!r} needs Dask: pip install 'driftloader[dask]'"
        ) from e
    client = Client(value)
    try:
        yield client.get_executor()
    finally:
        client.close()


def parallelism(executor: Executor) -> int:
    """How many tasks ``executor`` runs at once (its workers' threads for Dask)."""
    client = getattr(executor, "_client", None)
    if client is not None:  # distributed.client.ClientExecutor
        workers = client.scheduler_info().get("workers", {})
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
    return int(getattr(executor, "_max_workers", 0) or DEFAULT_WORKERS)


def partition(items: Sequence, tasks: int, max_size: int = MAX_TASK_SHARDS) -> list[list]:
    """``items`` cut into about ``tasks`` contiguous lists (none longer than ``max_size``)."""
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise ValueError(f"tasks must be an int >= 1, got {tasks!r}")
    items = list(items)
    size = max(1, min(max_size, -(-len(items) // tasks)))
    return [items[i : i + size] for i in range(0, len(items), size)]


def error_text(e: BaseException) -> str:
    """``"Type: message"``: how a task reports an error (exceptions may not survive pickling)."""
    return f"{type(e).__name__}: {e}"


def run_chunk(fn: Callable, items: list, args: tuple) -> list[tuple[Any, Any, str | None]]:
    """``fn(item, *args)`` for each item, in a worker: ``(item, result, None)`` or, when it
    raised, ``(item, None, "Type: message")`` (exceptions may not survive pickling)."""
    out = []
    for item in items:
        try:
            out.append((item, fn(item, *args), None))
        except Exception as e:
            out.append((item, None, error_text(e)))
    return out


def as_slots_free(executor: Executor, calls: Iterable[tuple]) -> Iterator[tuple[int, Future]]:
    """Submit ``calls`` (``(fn, *args)`` each) to ``executor`` as slots free up, two a slot
    in flight (one running, ``QUEUED_PER_SLOT`` waiting), as a process pool's workers pull
    them: a scheduler that places each task when it is submitted (Dask) could otherwise leave
    one worker with many of them while another idles at the end, and with none waiting a
    worker idles for the round trip to the client between tasks (10-15 ms through Dask's
    scheduler on a busy machine). Yields ``(i, future)`` of the ``i``-th call as each
    completes; the unfinished ones are cancelled when the caller stops early."""
    calls = enumerate(calls)
    slots = parallelism(executor) * (1 + QUEUED_PER_SLOT)
    running = {executor.submit(*call): i for i, call in islice(calls, slots)}
    try:
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            finished = [(running.pop(f), f) for f in done]
            running.update({executor.submit(*call): i for i, call in islice(calls, len(done))})
            yield from finished
    finally:
        for future in running:
            future.cancel()


def in_order(executor: Executor, calls: Iterable[tuple]) -> list:
    """The results of ``calls`` run by ``as_slots_free``, in the calls' order (a merge tree's
    order keeps its result the same from run to run)."""
    results = {i: future.result() for i, future in as_slots_free(executor, calls)}
    return [results[i] for i in range(len(results))]


def map_chunked(
    executor: Executor,
    fn: Callable,
    items: Sequence,
    args: tuple = (),
    run: Callable[[Callable, list, tuple], list] = run_chunk,
) -> Iterator[tuple[Any, Any, str | None]]:
    """``run(fn, chunk, args)`` (``run_chunk`` or one like it) over ``items`` partitioned into
    tasks on ``executor`` (handed over by ``as_slots_free``); yields each item's ``(item,
    result, error)`` as its task completes. ``fn`` and ``run`` must be top-level functions."""
    chunks = partition(items, parallelism(executor) * TASKS_PER_WORKER)
    for _, future in as_slots_free(executor, ((run, fn, c, args) for c in chunks)):
        yield from future.result()


# -- reference: a tree of merges ----------------------------------------------------------


def merge_stored(store: Any, shards: list, pack: bool = False) -> Partial:
    """Read and merge the stored profiles of ``shards`` (a task); with ``pack``, their merge is
    also written to the store as a pack (``packs.py``) when every shard had a profile, so the
    next build reads it instead."""
    profiles = store.fetch_profiles(shards)
    missing = [(s.url, s.version) for s, p in zip(shards, profiles) if p is None]
    found = [p for p in profiles if p is not None]
    sources, preprocessing = origins(found)
    merged = Profile.merged(found) if found else None
    if pack and merged is not None and not missing and len(shards) >= MIN_BUILD_PACK:
        covers = [store.shard_id(s.url, s.version) for s in shards]
        write_pack(store, None, pack_document(covers, merged, sources, preprocessing, True))
    return Partial(
        None if merged is None else _to_json(merged),
        missing,
        sorted(sources),
        sorted(preprocessing),
    )


def merge_partials(partials: list[Partial]) -> Partial:
    """Merge partials (a task one level up the tree)."""
    found = [Profile.from_dict(json.loads(p.profile)) for p in partials if p.profile is not None]
    return Partial(
        _to_json(Profile.merged(found)) if found else None,
        [m for p in partials for m in p.missing],
        sorted({s for p in partials for s in p.sources}),
        sorted({f for p in partials for f in p.preprocessing}),
    )


def _to_json(profile: Profile) -> str:
    return _document_json(profile.to_dict())


def _document_json(document: dict) -> str:
    return json.dumps(document, allow_nan=False, separators=(",", ":"))


def tree_reference(
    executor: ExecutorSpec,
    name: str,
    store: Any,
    shards: list,
    packs: Sequence[Pack] = (),
    loose: list | None = None,
) -> Profile:
    """Reference ``name`` over ``shards`` merged on ``executor`` from ``packs`` (read already)
    and the stored profiles of ``loose`` (default: every shard), see ``merged_tree``;
    ``MissingProfiles`` when some shard has none."""
    loose = list(shards) if loose is None else loose
    leaves = [Partial(_document_json(p.document), [], p.sources, p.preprocessing) for p in packs]
    with resolved(executor) as pool:
        if pool is None:
            raise ValueError(f"executor {executor!r}: expected an Executor, local:N or dask://")
        reference, missing, sources, preprocessing = merged_tree(pool, store, loose, leaves)
    if missing:
        raise missing_profiles(name, missing, len(shards))
    if reference is None:
        raise ValueError(f"cannot build reference {name!r}: no shards")
    return described(name, shards, reference, sources, preprocessing)


def merged_tree(
    executor: Executor, store: Any, shards: list, leaves: Sequence[Partial] = ()
) -> tuple[Profile | None, list, set[str], set[str]]:
    """The merge of ``leaves`` and of the stored profiles of ``shards``: read and merged in
    tasks on ``executor`` (each writes its merge as a pack), then ``MERGE_FANOUT`` at a time up
    a tree on the workers. Returns it (None when nothing has a profile), the ``(url, version)``
    of shards without one, their sources and preprocessing."""
    chunks = partition(shards, parallelism(executor) * TASKS_PER_WORKER) if shards else []
    partials = [*leaves, *in_order(executor, ((merge_stored, store, c, True) for c in chunks))]
    while len(partials) > MERGE_FANOUT:
        groups = [partials[i : i + MERGE_FANOUT] for i in range(0, len(partials), MERGE_FANOUT)]
        partials = in_order(executor, ((merge_partials, g) for g in groups))
    top = merge_partials(partials)
    reference = Profile.from_dict(json.loads(top.profile)) if top.profile is not None else None
    return reference, top.missing, set(top.sources), set(top.preprocessing)
