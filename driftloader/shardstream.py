"""A worker's pass over its shards: gate verdicts taken ahead, ``read_shards`` fed only the
shards they admit, so ranged requests stay in flight across shard boundaries.

``EpochReader.samples`` is the dataset's source stage. Each shard of the worker's epoch order
becomes a ``Step``; the gate's verdict on it is asked (``ShardGate.ahead``, which records
nothing) when the reader's lookahead reaches it, and only the shards it admits are fetched.
When the stream reaches a step, the gate decides with that verdict (``ShardGate.before``, which
records) and the shard's samples pass through ``gate.observe``. A shard seen twice inside the
lookahead window (``resampled=True`` draws) is decided only when reached, and read then.

A gated pass versions a shard as it reads it when it can: a local file with one ``os.stat``
as the lookahead reaches it; an S3 shard that the decision index found clean at every version
(``dataset.remote_stat`` leaves it without one) by the ETag or VersionId of its first GET,
which pins its later blocks. Such a shard is fetched and decided when reached, at the version
it was read at: a shard rewritten since is decided anew (and skipped, if so, having cost its
first blocks), never passed under an old decision. No listing or HEAD comes first.
Exact-once counts, resumption (``needed``: replayed shards) and ``on_error`` are the dataset's.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ShardReadError
from .gate import READ, ShardGate, Verdict, indexed_verdict
from .gate_reads import verdict_reads, with_sidecar_read
from .prefetch import WINDOW
from .reader import ReadOptions, ReadStats, read_shard, read_shards
from .sources import Shard, redact, stat_local, stat_shard

_S3 = re.compile(r"s3a?://", re.IGNORECASE)
UNFETCHED_RUN = 4 * WINDOW  # steps queued in a row with nothing to fetch before a new reader


def versioned_by_reading(shard: Shard) -> bool:
    """Whether a gated pass learns the shard's version from its first GET: an S3 shard not
    pinned and not stat'ed (``dataset.remote_stat`` left it so)."""
    return shard.version is None and not shard.pinned and _S3.match(shard.url) is not None


@dataclass
class Step:
    """One shard of the pass: where it is in the order, which gate decides it, and whether its
    bytes are fetched ahead (``fetch``) on the verdict taken ahead."""

    index: int
    shard: Shard
    gate: ShardGate | None = None
    verdict: Verdict | None = None  # taken ahead; None: decided when reached
    fetch: bool = True
    replay: bool = False  # finished before the state was saved: re-read only if still due
    due: bool = True  # a replayed shard with a sample still due (in a shuffle buffer)
    error: ShardReadError | None = None  # stat'ing it failed: raised where reading would


class ShardStream:
    """``(step, samples)`` in the steps' order; ``samples`` is None for a step not fetched.

    The steps are pulled lazily by ``read_shards`` (its lookahead), which is given only the
    shards of steps marked ``fetch``; the others are queued in between, in order. After
    ``UNFETCHED_RUN`` steps in a row with none to fetch (shards skipped unread, or resampled
    draws of shards already queued), the reader is ended and the queue served; a new one takes
    the next steps, so the queue stays bounded and the stream keeps moving.
    """

    def __init__(
        self, steps: Iterable[Step], storage_options: dict | None, options: ReadOptions, stats
    ) -> None:
        self.steps = iter(steps)
        self.storage_options = storage_options
        self.options = options
        self.stats = stats
        self.queue: deque[Step] = deque()
        self.paused = False

    def _fetched(self) -> Iterator[Shard]:
        run = 0
        for step in self.steps:
            self.queue.append(step)
            if step.fetch:
                run = 0
                yield step.shard
                continue
            run += 1
            if run >= UNFETCHED_RUN:
                self.paused = True
                return

    def __iter__(self) -> Iterator[tuple[Step, Iterator[dict] | None]]:
        while True:
            self.paused = False
            yield from self._read()
            if not self.paused:
                return

    def _read(self) -> Iterator[tuple[Step, Iterator[dict] | None]]:
        """The steps one reader takes, until the steps end or pause (then the queue is empty)."""
        pairs = read_shards(
            self._fetched(), self.storage_options, stats=self.stats, **self.options.keywords()
        )
        with contextlib.closing(pairs):
            waiting: tuple[Shard, Iterator[dict]] | None = None
            while True:
                if not self.queue:
                    if self.paused:
                        return
                    waiting = next(pairs, None)  # pulls steps into the queue
                    if not self.queue:
                        return
                step = self.queue.popleft()
                if not step.fetch:
                    yield step, None
                    continue
                shard, samples = waiting if waiting is not None else next(pairs)
                waiting = None
                yield step, samples

    def pending(self, shard: Shard) -> bool:
        """Whether ``shard`` (url and version) is queued, decided ahead and not yet reached."""
        return any(
            s.shard.url == shard.url and s.shard.version == shard.version for s in self.queue
        )


class EpochReader:
    """The samples of one pass over a worker's shards, counted per shard for resumption."""

    def __init__(
        self,
        gate: ShardGate | None,
        storage_options: dict | None,
        options: ReadOptions,
        stats: ReadStats,
        handler: Callable[[Exception], bool],
        publish: Callable[[], None],
    ) -> None:
        self.gate = gate
        self.storage_options = storage_options
        self.options = options
        self.stats = stats
        self.handler = handler
        self.publish = publish
        self.current: Shard | None = None

    def samples(
        self,
        shards: Iterable[Shard],
        progress: Any,
        limit: int | None = None,
        needed: Container[int] | None = None,
        skipped: Any = None,
        dry_limit: int | None = None,
    ) -> Iterator[Any]:
        """Samples in order, ``progress.counts[j]`` counting those of the j-th shard; on
        resume (``needed``), shards finished before the state was saved give ``skipped``
        placeholders, re-read only for the samples still due. ``dry_limit``: for endless
        shards (resampled draws), how many in a row may give no sample before that is an
        error (every shard skipped, excluded, empty or failing), not a stream that never ends."""
        counts = progress.counts
        stream = ShardStream([], self.storage_options, self.options, self.stats)
        stream.steps = self._steps(shards, counts, progress.source_done, needed, stream)
        pairs = iter(stream)
        reader = threading.get_ident()
        try:
            with contextlib.closing(pairs):
                yield from self._counted(pairs, counts, limit, needed, skipped, dry_limit)
        finally:
            if self.gate is not None:
                if threading.get_ident() == reader:
                    self.gate.flush()  # the pass's catalog rows are written before it ends
                else:  # closed by the garbage collector, say on fsspec's loop thread:
                    self.gate.let_go()  # its writes need that thread, never wait there
        progress.source_done = True

    def _counted(
        self,
        pairs: Iterator[tuple[Step, Iterator[dict] | None]],
        counts: list[int],
        limit: int | None,
        needed: Container[int] | None,
        skipped: Any,
        dry_limit: int | None = None,
    ) -> Iterator[Any]:
        pos = dry = 0
        for step, fetched in pairs:
            j, shard = step.index, step.shard
            if limit is not None and pos >= limit:
                break
            self.current = shard
            if step.replay:
                yield from self._replayed(step, fetched, pos, counts[j], needed, skipped)
                pos += counts[j]
                continue
            if j >= len(counts):
                counts.append(0)
            seen = counts[j]
            try:
                for i, sample in enumerate(self._admitted(step, fetched)):
                    if i < seen:  # resuming inside this shard
                        yield sample if needed is not None and pos + i in needed else skipped
                        continue
                    if limit is not None and pos + i >= limit:
                        break
                    counts[j] += 1
                    yield sample
            except ShardReadError as exn:
                self.stats.errors += 1
                self.stats.skipped_shards.append(redact(shard.url))
                self.publish()
                if not self.handler(exn):
                    break
            self.publish()
            pos += counts[j]
            dry = 0 if counts[j] > seen else dry + 1
            if dry_limit is not None and dry >= dry_limit:
                stats = self.stats
                raise ValueError(
                    f"resampled=True: the last {dry} shards drawn gave no sample (each "
                    "skipped, excluded, empty or failed): the stream would never end. So far "
                    f"{len(stats.excluded_shards)} excluded and {stats.errors} failed reads; "
                    "the drift report has the decisions"
                )

    def _steps(
        self,
        shards: Iterable[Shard],
        counts: list[int],
        source_done: bool,
        needed: Container[int] | None,
        stream: ShardStream,
    ) -> Iterator[Step]:
        known = len(counts) if source_done else len(counts) - 1
        pos = 0
        first = 0 if needed is None else max(known, 0)  # replayed shards need no verdict
        for j, shard in enumerate(profiles_ahead(self.gate, shards, first)):
            if needed is None or j >= known:
                yield self._decided(Step(j, shard, self.gate), stream)
                continue
            count, start = counts[j], pos  # finished before the state was saved
            pos += count
            if not any(i in needed for i in range(start, start + count)):
                yield Step(j, shard, fetch=False, replay=True, due=False)
                continue
            gate = None if self.gate is None else self.gate.replica()  # keeps no decisions
            yield self._decided(Step(j, shard, gate, replay=True), stream)

    def _decided(self, step: Step, stream: ShardStream) -> Step:
        """The step with its verdict taken ahead, fetched only if the gate admits it. A shard
        already queued or being read is too when the verdict comes from its stored profile or
        an indexed decision; else it is decided when reached (the read before it may store a
        profile of it) and read on its own."""
        if step.gate is None:
            return step
        try:  # a local file is versioned as it is reached (``DriftDataset.shards``)
            shard = step.shard = stat_local(step.shard)
        except ShardReadError as e:
            step.error, step.fetch = e, False
            return step
        current = self.current
        repeat = stream.pending(shard) or (
            current is not None and (current.url, current.version) == (shard.url, shard.version)
        )
        if versioned_by_reading(shard):  # fetched (unless a repeat), decided at the version read
            step.fetch = not repeat
            return step
        verdict = step.gate.ahead(shard)
        if repeat and verdict.n is None:  # not from a stored profile: one may be made first
            step.fetch = False
            return step
        step.verdict, step.fetch = verdict, verdict.action == READ
        return step

    def _admitted(self, step: Step, fetched: Iterator[dict] | None) -> Iterator[dict]:
        """The shard's samples if the gate reads it (through ``observe``); none if it skips."""
        gate, shard = step.gate, step.shard
        if step.error is not None:  # its drift report row says "failed", as a read error's
            if gate is not None:
                gate.failed(shard, step.error, 0)
            raise step.error
        if gate is not None and versioned_by_reading(shard):
            shard, fetched = self._versioned(step, fetched)
        if gate is not None and not gate.before(shard, step.verdict):
            if gate.is_quarantined(shard):
                self.stats.excluded_shards.append(redact(shard.url))
            return
        samples = fetched
        if samples is None:  # decided when reached: read on its own
            samples = read_shard(
                shard, self.storage_options, stats=self.stats, **self.options.keywords()
            )
        if gate is not None:
            samples = gate.observe(shard, samples)
        yield from samples

    def _versioned(
        self, step: Step, fetched: Iterator[dict] | None
    ) -> tuple[Shard, Iterator[dict] | None]:
        """The shard at the version its first GET reported (``ShardSamples.version``, known
        with its first sample), and its samples, the first one included; stat'ed (a HEAD)
        when it was not fetched ahead or that answer named no version (an empty object)."""
        shard, samples, first = step.shard, None, None
        try:
            if fetched is not None:
                samples = iter(fetched)
                first = next(samples, None)
                shard = Shard(shard.url, getattr(fetched, "version", None), shard.size)
            if shard.version is None:
                shard = stat_shard(shard, self.storage_options)
        except ShardReadError as e:
            version = shard.version or getattr(fetched, "version", None)
            step.gate.failed(Shard(shard.url, version, shard.size), e, 0)
            raise
        step.shard = shard
        if first is not None:
            samples = itertools.chain((first,), samples)
        return shard, samples

    def _replayed(
        self,
        step: Step,
        fetched: Iterator[dict] | None,
        pos: int,
        count: int,
        needed: Container[int] | None,
        skipped: Any,
    ) -> Iterator[Any]:
        """A shard finished before the state was saved: placeholders, and the samples of it
        still due (in a shuffle buffer) read again through a gate that keeps no decisions."""
        if not step.due:
            yield from itertools.repeat(skipped, count)
            return
        samples = itertools.islice(self._admitted(step, fetched), count)
        for i, sample in enumerate(samples):
            yield sample if needed is not None and pos + i in needed else skipped


def profiles_ahead(
    gate: ShardGate | None, shards: Iterable[Shard], first: int, sidecars: bool = True
) -> Iterator[Shard]:
    """``shards``, the stored profiles that the verdicts on the next ``WINDOW`` of them (from
    the ``first``-th on) will read being read meanwhile (``prefetch``): those of shards with a
    version, neither pinned, quarantined nor decided in the index. A local file among them
    comes stat'ed (``stat_local``), so ``_decided`` does not stat it again. With ``sidecars``
    (the shards will be read: ``plan`` reads none), a shard with no stored profile has its
    sidecar read too."""
    if gate is None or gate.store is None:
        yield from shards
        return
    queue: deque[Shard] = deque()
    source = enumerate(shards)
    while True:
        while len(queue) < WINDOW:
            j, shard = next(source, (-1, None))
            if shard is None:
                break
            queue.append(_read_profile_ahead(gate, shard, sidecars) if j >= first else shard)
        if not queue:
            return
        yield queue.popleft()


def _read_profile_ahead(gate: ShardGate, shard: Shard, sidecar: bool) -> Shard:
    """The shard, stat'ed if a local file, its profile's read started if its verdict needs it."""
    try:
        shard = stat_local(shard)
    except ShardReadError:
        return shard  # stat'ed again, raised and recorded when the reader reaches it
    key = (shard.url, shard.version)
    if shard.version is None or key in gate.pinned or indexed_verdict(gate, shard) is not None:
        return shard
    if gate.reference_name is None or not gate.is_quarantined(shard):
        read, then = verdict_reads(gate, shard)  # the sidecar too, when the shard is read
        gate._ahead.start(key, with_sidecar_read(gate, shard, read) if sidecar else read, then)
    return shard
