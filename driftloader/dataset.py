"""``DriftDataset``: a drop-in for ``webdataset.WebDataset`` that profiles and gates shards.

It holds the shards and iterates over them: placement (rank x DataLoader worker), the shard
order of each epoch, the chain gate.before -> reader -> gate.observe -> stages, ``with_epoch``
and ``equalize`` counts, and resumption. webdataset's arguments are translated in
``compat.py``, the fluent methods are ``fluent.FluidInterface``'s, the stages and how they
resume are ``stages.py``'s, the gate and its policies ``gate.py`` / ``policy.py``'s.
"""

from __future__ import annotations

import itertools
import os
import random
import time
import warnings
import weakref
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from . import resume as R
from . import stages as S
from .compat import translate
from .distributed import Placement, check_single_node, is_initialised, placement, rank_and_world
from .equalize import equal_limit, equal_split, keyed_plan, rank_counts
from .fluent import FluidInterface
from .gate import GateOptions, ShardGate, plan_row
from .gate_reads import catalog_decisions, clean_keys, exclusions, read_for_verdicts
from .handlers import error_handler
from .listing import LIST_PAGE_KEYS
from .monitoring import DriftRows
from .pipeline import Context, hand_over
from .policy import policy_from
from .reader import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_MEMBER_SIZE, ReadOptions, ReadStats
from .shardstream import EpochReader, profiles_ahead, versioned_by_reading
from .sources import (
    Shard,
    expand_urls,
    gc_paused,
    is_local_file,
    redact,
    stat_shards,
)
from .store import shard_key
from .worker_reports import WorkerReports

SKIPPED = S.SKIPPED
STAT_THREADS = 16  # HEADs in flight when a few shards are stat'ed one by one
_END = object()


class OpenIterators:
    """A context manager that closes the iterators it opened (``with ds: ...``)."""

    OPEN = "_open"
    _open: weakref.WeakSet | None = None

    def opened(self, items: Iterator) -> Iterator:
        if self._open is None:
            self._open = weakref.WeakSet()
        self._open.add(items)
        return items

    def close(self) -> None:
        """Close the open iterators (their reads in flight are dropped)."""
        for items in list(self._open or ()):
            items.close()
        self._open = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DriftDataset(FluidInterface, OpenIterators, IterableDataset):
    """Stream webdataset shards from any fsspec URL; optionally profile and gate them.

    Replaces the first call of a webdataset pipeline and keeps the rest::

        ds = DriftDataset("s3://bucket/shard-{000000..000127}.tar").shuffle(1000)
        ds = ds.decode("pil").to_tuple("jpg", "cls")

    Shards are shuffled by ``(seed, epoch)`` (call ``set_epoch``), then split across ranks and
    DataLoader workers so that each is read exactly once per epoch. ``on_error`` decides what a
    corrupt or unreadable shard does: ``"raise"`` (default), ``"skip"`` the rest of the shard
    (counted in ``stats``), ``"warn"``, or a webdataset-style ``handler(exn) -> bool``.

    Each iterator keeps ranged requests in flight across shard boundaries, bounded by
    ``read_options=ReadOptions(max_inflight=, max_requests=, lookahead=, timeout=, ...)`` (the
    peak is ``stats.inflight_peak_bytes``); a shard the gate skips is never requested.

    webdataset's own arguments are accepted where they mean something here (``shardshuffle``,
    ``handler``, ``nodesplitter`` / ``workersplitter``, ``detshuffle``) and the others are
    refused with what to use instead: see ``compat.py``. ``empty_check`` (on by default, as
    webdataset's) raises when this rank and worker read no sample: more DataLoader workers or
    ranks than shards, or every shard empty, skipped or excluded; pass ``empty_check=False``
    when that is expected.
    With ``store=`` each shard's profile is written to the store as it is read; with
    ``reference=`` and ``policy=`` drifted shards are monitored, skipped, reweighted or
    resampled (``policy.POLICIES``). The gate's other settings go in ``options=GateOptions(
    featurizer=, drift_config=, probe=, metadata=, profile_config=, ...)``, or one by one as
    keywords (``probe=64``).
    The profiles it writes keep each shard's metadata: its ``<url>.json`` sidecar, if any, and
    ``metadata`` (a dict keyed by shard URL, or a callable of the URL); a source or
    preprocessing fingerprint the reference never saw is then drift of its own.

    ``equalize=True`` gives every rank and worker the same number of samples per epoch (the
    smallest slice's), from the stored profiles' counts and skip decisions, so DDP ranks stay in
    lockstep; every shard to be read must be profiled. ``state_dict()`` / ``load_state_dict()``
    resume an epoch exactly where it stopped (see docs/distributed.md).

    In a DataLoader worker, batches (items of a pipeline with ``.batched()``) of up to 1 MiB of
    arrays reach the main process by value rather than as a shared-memory segment per array,
    which costs more for small batches (see ``pipeline.hand_over``): the DataLoader still
    yields the same tensors. Their numpy arrays become tensors in the worker already, so a
    custom DataLoader ``collate_fn`` sees tensors; ``worker_handoff=False`` keeps numpy arrays
    and torch's shared memory. Without workers, or iterated directly, batches are webdataset's.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        storage_options: dict | None = None,
        on_error: str | Callable[[Exception], bool] | None = None,
        store: Any = None,
        reference: str | None = None,
        policy: str = "monitor",
        options: GateOptions | None = None,
        split_by_node: bool | None = None,
        split_by_worker: bool | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        retries: int = 5,
        opener: Callable[..., object] | None = None,
        read_options: ReadOptions | None = None,
        equalize: bool = False,
        worker_handoff: bool = True,
        empty_check: bool = True,
        **webdataset_args: Any,
    ) -> None:
        super().__init__()
        args = translate(
            shuffle, on_error, split_by_node, split_by_worker, options, webdataset_args
        )
        check_equalize(equalize, store is not None, args.resampled)
        if args.options.metadata is not None and store is None:
            raise ValueError(
                "metadata= is kept in the profiles the loader writes to its store: pass store= too"
            )
        self.storage_options = storage_options
        self.shardshuffle = args.shuffle
        self.seed = seed
        self.handler = error_handler(args.on_error)
        self.split_by_node = args.split_by_node
        self.split_by_worker = args.split_by_worker
        self.single_node = args.single_node
        self.empty_check = empty_check
        self.resampled = args.resampled
        self.read_options = (read_options or ReadOptions()).with_given(
            block_size=block_size, max_member_size=max_member_size, retries=retries, opener=opener
        )
        self.stages: list[S.Stage] = []
        self._stats = ReadStats()  # this process's; ``stats`` adds its DataLoader workers'
        self._stats_pid = os.getpid()
        self._reports = WorkerReports()
        self.epoch: int | None = None
        self._iterations = 0
        self._nsamples: int | None = None
        self._length: int | None = None
        self._repetitions: int | None = 1
        self.equalize = equalize
        self.worker_handoff = worker_handoff
        self._rank_world: tuple[int, int] | None = None
        self._plan: list[dict] | None = None
        self._progress: R.Progress | None = None
        self._resume: R.Progress | None = None
        self.gate: ShardGate | None = None
        self._created = time.time()
        gated = store is not None or reference is not None or policy_from(policy).NEEDS_REFERENCE
        # Versions key profiles and decisions; pinned shards are checked against storage
        # here, so a changed ETag or a deleted VersionId fails now, naming the shard. A gated
        # dataset's local files, and its S3 shards decided clean before, are versioned as they
        # are read (an ``os.stat``; the first GET's ETag or VersionId), or all at once when
        # ``shards`` is first asked for: 100k of them took seconds before the first sample.
        self._shards: list[Shard] | None = None  # every shard with its version, once known
        if gated:
            self._given, self.gate = listed_and_gate(
                urls,
                self.storage_options,
                lambda: ShardGate(
                    store, reference, policy, args.options, self.storage_options, self.seed
                ),
            )
            if equalize:  # its plan keys every shard by version
                self._shards = stat_shards(self._given, self.storage_options)
            warn_quarantined(self.gate, self)
        else:
            self._given = expand_urls(urls, storage_options)
            if any(s.pinned for s in self._given):
                self._given = stat_shards(self._given, self.storage_options)
            self._shards = self._given

    @property
    def shards(self) -> list[Shard]:
        """The shards, in the order given, with their versions when the dataset is gated (a
        shard that cannot be stat'ed stays without one: reading it fails, naming it)."""
        if self._shards is None:
            self._shards = versioned(self._given, self.storage_options)
        return self._shards

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds shard and sample shuffling (call it before each epoch)."""
        self.epoch = epoch

    # -------------------------------------------------------------------------- iteration

    def shards_for(self, where: Placement, epoch: int) -> Iterable[Shard]:
        """The shards this rank and worker read in ``epoch``, in order.

        Iterator *i* of *N* gets shards ``i, i+N, ...`` of the epoch's order. Under
        ``equalize`` the shards that ``plan()`` reads are dealt out like that among themselves,
        so a skipped or excluded shard never takes a readable one's place (``equal_split``).
        """
        if self.resampled:
            return drawn_shards(self._shards or self._given, self.seed, where, epoch)
        if self.equalize:  # keyed by version: every shard stat'ed first
            return equal_split(self._keyed_plan(), self._ordered(epoch), where.total)[where.index]
        shards = self._ordered(epoch)
        return shards[where.index :: where.total]

    def _ordered(self, epoch: int) -> list[Shard]:
        """Every shard in ``epoch``'s order: shuffled by ``(seed, epoch)``, the same everywhere."""
        shards = list(self._shards or self._given)  # versioned once ``shards`` was asked for
        if self.shardshuffle:
            random.Random(f"{self.seed}/shards/{epoch}").shuffle(shards)
        return shards

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state[OpenIterators.OPEN] = None  # iterators stay with their process
        if is_initialised():  # spawned DataLoader workers do not inherit the process group
            state["_rank_world"] = rank_and_world()
        return state

    def __iter__(self) -> Iterator:
        items = self._iterate()
        return self.opened(hand_over(items) if self._hands_over() else items)

    @property
    def stats(self) -> ReadStats:
        """What reading did (shards, samples, bytes, retries, errors, skipped shards), counted
        once, in this process and, in the process that made the dataset, its DataLoader
        workers too (``worker_reports``)."""
        if not self._reports.in_owner():
            return self._stats
        workers, _ = self._reports.gathered()
        return ReadStats().merge(self._stats).merge(workers)

    def _publish(self) -> None:
        """In a DataLoader worker: tell the dataset's owner process what reading did."""
        if not self._reports.in_owner() and get_worker_info() is not None:
            self._reports.publish(self._stats, [] if self.gate is None else self.gate.results)

    def _iterate(self) -> Iterator:
        if self._stats_pid != os.getpid():  # a worker's copy: count its own reads only
            self._stats, self._stats_pid = ReadStats(), os.getpid()
        if self.single_node:
            check_single_node(self._rank_world)
        where = placement(self.split_by_node, self.split_by_worker, self._rank_world)
        epoch = self.epoch if self.epoch is not None else self._iterations
        warn_if_uneven(self, where, epoch)
        progress = self._take_resume(epoch, where)
        resumed = progress is not None
        if progress is None:
            progress = R.Progress(epoch, self._iterations, R.where_tuple(where))
        self._progress = progress
        self._iterations = progress.iterations + 1
        limit = self._nsamples
        while not progress.complete:
            stream = self._epoch_stream(where, epoch, progress, resumed)
            resumed = False
            while limit is None or progress.produced < limit:
                item = next(stream, _END)
                if item is _END:
                    break
                progress.yielded += 1
                progress.produced += 1
                yield item
            if last_pass(progress, limit, self._repetitions):
                progress.complete = True
            elif progress.yielded == 0:
                warnings.warn(
                    f"rank {where.rank} worker {where.worker}: no samples to repeat", stacklevel=2
                )
                progress.complete = True
            else:
                progress.next_sub()
        if self.empty_check and progress.produced == 0 and not any(progress.counts):
            raise empty_error(where, len(self._given))  # as webdataset's, whatever stages drop

    def _hands_over(self) -> bool:
        """Whether items go through ``pipeline.hand_over``: batches that a DataLoader worker
        passes straight to its collate_fn (not to a wrapping dataset, nor single samples,
        which the DataLoader may batch itself in the worker)."""
        info = get_worker_info()
        if not self.worker_handoff or info is None or info.dataset is not self:
            return False
        return S.hands_over_batches(self.stages)

    def _epoch_stream(
        self, where: Placement, epoch: int, progress: R.Progress, resumed: bool = False
    ) -> Iterator:
        if self.gate is not None:
            self.gate.start_pass(epoch, progress.sub, resumed)
        epoch = R.pass_seed(epoch, progress.sub)
        ctx = Context(self.seed, epoch, where.rank, where.worker)
        shards = self.shards_for(where, epoch)
        limit = (
            equal_limit(self._keyed_plan(), self._ordered(epoch), where) if self.equalize else None
        )
        if not resumed or progress.yielded == 0 and not progress.counts:
            progress.counts, progress.source_done = [], False
            stream: Iterator = self._samples(shards, progress, limit)
            for stage in self.stages:
                stream = stage(stream, ctx)
            return stream
        return self._resumed_stream(shards, ctx, progress, limit)

    def _resumed_stream(
        self, shards: Iterable[Shard], ctx: Context, progress: R.Progress, limit: int | None
    ) -> Iterator:
        """Rebuild the stream and drop what was yielded. When every stage can say from
        positions which samples are still due (``stages.replays_positions``), the others
        are placeholders, never read or decoded (whole shards of them are not even opened);
        else every sample is replayed through the real stages."""
        consumed = sum(progress.counts)
        stages: list[Callable] = list(self.stages)
        needed: Container[int] = range(consumed)
        if S.replays_positions(self.stages):
            needed = S.still_due(self.stages, ctx, consumed, progress.source_done, progress.yielded)
            stages = [st.replaying() for st in self.stages]
        stream: Iterator = self._samples(shards, progress, limit, needed)
        for stage in stages:
            stream = stage(stream, ctx)
        return itertools.islice(stream, progress.yielded, None)

    def _samples(
        self,
        shards: Iterable[Shard],
        progress: R.Progress,
        limit: int | None = None,
        needed: Container[int] | None = None,
    ) -> Iterator[Any]:
        reader = EpochReader(
            self.gate,
            self.storage_options,
            self.read_options,
            self._stats,
            self.handler,
            self._publish,
        )
        dry_limit = dry_draws(len(self._shards or self._given)) if self.resampled else None
        return reader.samples(shards, progress, limit, needed, SKIPPED, dry_limit)

    # -------------------------------------------------------------------------- equalizing

    def plan(self) -> list[dict]:
        """Per shard, from the store only: ``{"url", "version", "n", "action"}``.

        ``n`` is the stored sample count (``None`` when the shard has no stored profile at its
        current version); ``action`` is ``"excluded"`` when ``driftloader quarantine`` put the
        shard version on the reference's exclusion list, ``"skip"`` when the policy skips it
        before reading it (the gate's verdict), else ``"read"``. Only ``"read"`` shards yield
        samples. It depends only on the store, so every rank agrees.
        """
        # the stored profiles the verdicts read are read ahead, many at once (one after the
        # other, 100k undecided shards at 40 ms took over an hour)
        shards = profiles_ahead(self.gate, self.shards, 0, sidecars=False)  # nothing profiled
        plan = self._plan or [self._plan_row(shard) for shard in shards]
        if self.gate is not None:
            self.gate.flush()  # the decisions it took are recorded before DataLoader forks
        if all(row["n"] is not None or row["action"] != "read" for row in plan):
            self._plan = plan  # complete: the store will not change it
        return [dict(row) for row in plan]

    def _plan_row(self, shard: Shard) -> dict:
        if self.gate is None:
            return {"url": redact(shard.url), "version": shard.version, "n": None, "action": "read"}
        return plan_row(self.gate, shard)

    def _keyed_plan(self) -> dict:
        return keyed_plan(self.shards, self.plan())

    # ------------------------------------------------------------------------- resumption

    def state_dict(self) -> dict:
        """This iterator's position, JSON-safe: epoch, shard order inputs, per-shard counts,
        items yielded, data versions, the stages' and the gate's state (drift decisions so
        far); ``load_state_dict`` resumes."""
        return R.saved_state(
            self.seed,
            self.shards,
            self.epoch,
            self._iterations,
            self._progress,
            self.stages,
            self.gate,
        )

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``: the next iteration of the saved epoch yields exactly the
        items not yet yielded, in the same order. Refuses other shards, versions, seeds or
        stages."""
        R.check_version(state)
        try:
            self._load_state(state)
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed DriftDataset state ({e!r}): {state!r:.200}") from e

    def _load_state(self, state: dict) -> None:
        R.check_shards(state[R.SHARDS], self.shards)
        if state[R.SEED] != self.seed:
            raise ValueError(
                f"state was saved with seed={state[R.SEED]}, this dataset has {self.seed}"
            )
        if state[R.VERSION] >= 2:
            S.check_states(self.stages, state[R.STAGES])
        gate = R.gate_state(state)
        self.epoch = state[R.SET_EPOCH]
        self._iterations = state[R.ITERATIONS]
        raw = state[R.PROGRESS]
        self._resume = None if raw is None else R.Progress.from_dict(raw)
        if self._resume is not None and self._resume.complete:
            self._iterations += 1
        self._progress = None
        if self.gate is not None:
            self.gate.reset(gate)

    def _take_resume(self, epoch: int, where: Placement) -> R.Progress | None:
        resume, self._resume = self._resume, None
        if resume is None or resume.epoch != epoch:
            return None
        R.check_placement(resume, where)
        return resume

    def drift_report(self, include_store: bool = True, epoch: int | None = None) -> list[dict]:
        """Per-shard decisions taken since this dataset was made: by this process and its
        DataLoader workers and, with ``include_store``, by other ranks (read back from the
        catalog, which keeps each shard's latest decision and does not take a decision it
        holds already again: another rank's row then names when it was first taken, maybe
        before this dataset was made, and is not shown). Each row names its ``epoch``; pass
        ``epoch=`` for that epoch's rows only; ``print(...)`` shows them as a table."""
        if self.gate is None:
            return DriftRows()
        rows = self._reports.with_workers(self.gate.report())  # this process's and its workers'
        if include_store:  # other ranks'
            rows += catalog_decisions(self.gate, self.shards, self._created, rows)
        return DriftRows(r for r in rows if epoch is None or r.get("epoch") == epoch)


def listed_and_gate(
    urls: str | Sequence[str],
    storage_options: dict | None,
    make_gate: Callable[[], ShardGate],
) -> tuple[list[Shard], ShardGate]:
    """The shards the URLs name and the gate with what its verdicts read (reference,
    exclusions, decision index), read while the URLs are expanded (a glob's listing): at 40 ms
    a round trip, one after the other they delayed the first sample. Then the shards are
    stat'ed but for those versioned as they are read (``remote_stat``), which the decision
    index tells, unless a glob's listing gave every one its version. An error of the listing
    (no shard) is raised first. No garbage collection meanwhile: 100k shards and decisions are
    made, none of them garbage, and a collection walks every object of the process."""
    with gc_paused(), ThreadPoolExecutor(1) as pool:
        listing = pool.submit(expand_urls, urls, storage_options)
        try:
            gate = make_gate()
            read_for_verdicts(gate)
        except BaseException:
            listing.result()
            raise
        shards = listing.result()
        if all(s.listed for s in shards):  # a glob's: versions from the listing just taken
            return shards, gate  # (100k made again in stat_shards took 0.4 s)
        by_reading = any(map(versioned_by_reading, shards))  # else no clean key is looked at
        return remote_stat(shards, storage_options, clean_keys(gate) if by_reading else ()), gate


def remote_stat(
    shards: list[Shard], storage_options: dict | None, clean: Container[str] = frozenset()
) -> list[Shard]:
    """The shards with their versions but for those versioned as they are read: unpinned
    local files (one ``os.stat`` as the reader reaches each) and the S3 shards ``clean`` holds
    the keys of (the version the first GET reports; see ``shardstream``). The rest, if a few
    among many, are stat'ed with a HEAD each rather than with their folder's listing: HEADs
    take one round trip per ``STAT_THREADS`` of them, the listing one per page of
    ``LIST_PAGE_KEYS`` shards, one page after the other."""
    later = [_at_read(s, clean) for s in shards]
    rest = [s for s, at_read in zip(shards, later) if not at_read]
    if not rest:
        return shards
    listing = len(rest) * LIST_PAGE_KEYS >= STAT_THREADS * len(shards)
    stated = iter(stat_shards(rest, storage_options, STAT_THREADS, listing=listing))
    return [s if at_read else next(stated) for s, at_read in zip(shards, later)]


def _at_read(shard: Shard, clean: Container[str]) -> bool:
    if versioned_by_reading(shard):  # its URL is its key unless it holds credentials
        return bool(clean) and (shard.url in clean or shard_key(shard.url) in clean)
    return is_local_file(shard)


def versioned(shards: list[Shard], storage_options: dict | None) -> list[Shard]:
    """Every shard with its version (``DriftDataset.shards``), those versioned as they are read
    included (``stat_shards``: an ``os.stat`` per local file, a listing or HEADs for S3); one
    that cannot be stat'ed stays as given (reading it fails, naming it)."""
    unknown = [s for s in shards if is_local_file(s) or versioned_by_reading(s)]
    found = {s.url: s for s in stat_shards(unknown, storage_options, failed=[])} if unknown else {}
    return [  # a glob's shards lose ``listed``: a later stat_shards lists again
        found.get(s.url) or (Shard(s.url, s.version, s.size) if s.listed else s) for s in shards
    ]


def drawn_shards(shards: list[Shard], seed: int, where: Placement, epoch: int) -> Iterator[Shard]:
    """``resampled=True``: shards drawn with replacement, forever, seeded by (seed, epoch, rank,
    worker) so that a rerun or a resume draws the same ones (as webdataset's
    ``ResampledShards``: no split, every iterator draws from every shard)."""
    rng = random.Random(f"{seed}/resampled/{epoch}/{where.rank}/{where.worker}")
    while True:
        yield shards[rng.randrange(len(shards))]


def dry_draws(nshards: int) -> int:
    """How many resampled draws in a row may give no sample before that is an error: at
    least 20 per shard, so that with one shard in n readable, all of them missing it by
    chance has odds under e**-20."""
    return max(1000, 20 * nshards)


def last_pass(progress: R.Progress, limit: int | None, repetitions: int | None) -> bool:
    """Whether the pass that just ended is the last: the item limit (``with_epoch``,
    ``repeat(nbatches=)``) is reached, or it was the last of ``repeat(nepochs)``."""
    if limit is not None and progress.produced >= limit:
        return True
    return repetitions is not None and progress.sub + 1 >= repetitions


def empty_error(where: Placement, nshards: int) -> ValueError:
    return ValueError(
        f"rank {where.rank} worker {where.worker} read no samples ({nshards} shards for "
        f"{where.total} ranks x workers, or every shard empty, skipped or excluded); pass "
        "empty_check=False to allow it"
    )


def check_equalize(equalize: bool, stored: bool, resampled: bool) -> None:
    """``equalize=True`` needs a store's counts, and means nothing for a resampled stream."""
    if equalize and not stored:
        raise ValueError(
            "equalize=True needs store= with the shards' profiles (their sample counts); "
            "without a store use .with_epoch(n) to give every rank n items"
        )
    if equalize and resampled:
        raise ValueError(
            "resampled=True draws shards at random forever: equal counts come from "
            ".with_epoch(n), not equalize=True"
        )


def warn_quarantined(gate: ShardGate, ds: DriftDataset) -> None:
    """Say once, when the dataset is made, how many of its shards quarantine excludes."""
    if gate.reference_name is None or gate.store is None or not exclusions(gate):
        return  # the usual case: no shard stat'ed for it
    shards = ds.shards
    n = sum(gate.is_quarantined(shard) for shard in shards)
    if n:
        warnings.warn(
            f"{n} of {len(shards)} shards are quarantined for reference "
            f"{gate.reference_name!r} (`driftloader quarantine` put their versions on its "
            f"exclusion list): policy {gate.policy.name!r} does not read them; they are listed "
            "in ds.stats.excluded_shards and drift_report() as 'excluded'",
            stacklevel=3,
        )


def warn_if_uneven(ds: DriftDataset, where: Placement, epoch: int) -> None:
    """Under a split by node without equal counts (``equalize``, ``with_epoch``), warn (in
    worker 0) when the ranks get different numbers of samples, or of shards if unknown."""
    fixed = ds.equalize or ds.resampled or ds._nsamples is not None
    if where.worker or not ds.split_by_node or where.world_size < 2 or fixed:
        return
    rows = ds.plan() if ds.gate is not None else None
    warn_uneven_ranks(where, *rank_counts(ds.shards, rows, ds._ordered(epoch), where.world_size))


def warn_uneven_ranks(where: Placement, counts: list[int], unit: str) -> None:
    """Warn (once per process: the message repeats) when ranks get different counts of
    samples (from stored profiles) or of shards (without them)."""
    if len(set(counts)) == 1:
        return
    warnings.warn(
        f"rank {where.rank} of {where.world_size}: split by node, the ranks get {counts} "
        f"{unit}; DDP hangs when ranks yield different numbers of batches: pass "
        "equalize=True (with store=) or .with_epoch(n)",
        stacklevel=3,
    )
