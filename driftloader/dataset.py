"""``DriftDataset``: a drop-in for ``webdataset.WebDataset`` that profiles and gates shards."""

from __future__ import annotations

import copy
import itertools
import random
import time
import warnings
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch.utils.data import IterableDataset

from . import pipeline as P
from .distributed import Placement, _initialised, placement, rank_and_world
from .errors import ShardReadError, VersionMismatch
from .reader import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_MEMBER_SIZE, ReadStats, read_shard
from .sources import Shard, expand_urls, redact, stat_shards

ON_ERROR = {
    "raise": P.reraise_exception,
    "skip": P.ignore_and_continue,
    "warn": P.warn_and_continue,
}


def _error_handler(on_error: str | Callable[[Exception], bool]) -> Callable[[Exception], bool]:
    if callable(on_error):
        return on_error
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; use 'raise', 'skip', 'warn' or a handler")
    return ON_ERROR[on_error]


# ---------------------------------------------------------------- webdataset's arguments

_NOT_GIVEN: Any = object()


def _one_of(name: str, ours: Any, alias: str, given: Any, theirs: Any, default: Any) -> Any:
    """Our argument or its webdataset alias (never both), else ``default``; ``theirs`` is the
    alias's value ``given`` in our terms, None when it was not given."""
    if ours is not None and theirs is not None:
        raise ValueError(f"{name}={ours!r} and {alias}={given!r} both given; pass only one")
    return ours if ours is not None else theirs if theirs is not None else default


def _shard_shuffle(shardshuffle: bool | int | None) -> bool | None:
    """webdataset's ``shardshuffle`` (a bool or a shard buffer size) as our ``shuffle``: we
    always shuffle the whole shard list by ``(seed, epoch)``, so any size > 0 shuffles."""
    if shardshuffle is None or isinstance(shardshuffle, bool):
        return shardshuffle
    if isinstance(shardshuffle, int) and shardshuffle >= 0:
        return shardshuffle > 0
    raise ValueError(f"shardshuffle={shardshuffle!r}; use a bool or a shard buffer size >= 0")


def _splitter_name(fn: Any) -> str | None:
    """The name of one of webdataset's own shard splitters, else None."""
    module = getattr(fn, "__module__", None) or ""
    if module.split(".")[0] == "webdataset" and callable(fn):
        return getattr(fn, "__name__", None)
    return None


def _splits(splitter: Any, kind: str) -> bool | None:
    """webdataset's ``nodesplitter`` / ``workersplitter`` as our ``split_by_node`` /
    ``split_by_worker``: None (no split) is False, its ``split_by_node`` /
    ``split_by_worker`` is True, its ``single_node_only`` is False (and more than one rank is
    refused when iterating); not given is None. Other callables are refused: we split shards
    by rank and worker ourselves, so that every shard is read once and resumes exactly."""
    if splitter is _NOT_GIVEN:
        return None
    if splitter is None:
        return False
    name = _splitter_name(splitter)
    if name == f"split_by_{kind}":
        return True
    if kind == "node" and name == "single_node_only":
        return False
    raise ValueError(
        f"{kind}splitter={splitter!r}: driftloader splits shards by rank and DataLoader worker "
        f"itself; pass split_by_{kind}=True/False (or None, webdataset.split_by_{kind}) instead "
        "of a custom splitter"
    )


def _refuse_unsupported(
    resampled: bool, cache_dir: str | None, repeat: bool, member_filters: dict[str, Any]
) -> None:
    if repeat:
        raise ValueError(
            "repeat=True (the shard list forever) is not supported: use .with_epoch(n) for a "
            "fixed number of items per epoch, repeating the shards in a new order"
        )
    given = [name for name, fn in member_filters.items() if fn is not None]
    if given:
        raise ValueError(
            f"{'/'.join(given)}=: driftloader profiles whole samples as they are stored, so "
            "profiles from training and from `driftloader profile` agree; drop or rename fields "
            "after reading instead: .map_dict(...), .rename(...), .to_tuple(...)"
        )
    if resampled:
        raise ValueError(
            "resampled=True (shards drawn with replacement, forever) is not supported: "
            "driftloader reads each shard exactly once per epoch and resumes exactly; use "
            ".with_epoch(n) for a fixed number of items per epoch (repeating shards in a new "
            "order) and set_epoch(e) to reshuffle"
        )
    if cache_dir is not None:
        raise ValueError(
            f"cache_dir={cache_dir!r}: driftloader does not cache shards locally, it streams "
            "them from storage (retrying and resuming interrupted reads); drop cache_dir=, or "
            "copy the shards to local disk and pass their paths"
        )


STATE_VERSION = 1
_ONE_TO_ONE = (P._decode, P._map, P._map_dict, P._to_tuple, P._rename)
# stages that keep batches batches (unbatched is not one of them: see _hands_over)
_BUILT_IN = (*_ONE_TO_ONE, P._select, P._shuffle, P._batched)


class _Skipped:
    """Stands in for a sample that a resumed iterator already yielded: never decoded."""

    __slots__ = ()


SKIPPED = _Skipped()
_END = object()


@dataclass
class _Progress:
    """Where one iterator is: enough to rebuild its stream exactly (see ``state_dict``)."""

    epoch: int
    iterations: int
    where: tuple[int, int, int, int]
    sub: int = 0  # with_epoch: which repetition of the shard list
    yielded: int = 0  # items yielded in this repetition
    produced: int = 0  # items yielded in this iteration
    counts: list[int] = field(default_factory=list)  # samples passed on per shard started
    source_done: bool = False
    complete: bool = False

    def next_sub(self) -> None:
        self.sub, self.yielded, self.counts, self.source_done = self.sub + 1, 0, [], False


class DriftDataset(IterableDataset):
    """Stream webdataset shards from any fsspec URL; optionally profile and gate them.

    Replaces the first call of a webdataset pipeline and keeps the rest::

        ds = DriftDataset("s3://bucket/shard-{000000..000127}.tar").shuffle(1000)
        ds = ds.decode("pil").to_tuple("jpg", "cls")

    Shards are shuffled by ``(seed, epoch)`` (call ``set_epoch``), then split across ranks and
    DataLoader workers so that each is read exactly once per epoch. ``on_error`` decides what a
    corrupt or unreadable shard does: ``"raise"`` (default), ``"skip"`` the rest of the shard
    (counted in ``stats``), ``"warn"``, or a webdataset-style ``handler(exn) -> bool``.

    webdataset's own arguments are accepted where they mean something here: ``shardshuffle``
    (a bool, or a shard buffer size: any size > 0 shuffles the whole shard list; alias of
    ``shuffle``), ``handler`` (alias of ``on_error``), ``nodesplitter`` / ``workersplitter``
    (``None`` for no split, or webdataset's ``split_by_node`` / ``split_by_worker`` /
    ``single_node_only``; other splitters are refused) and ``empty_check`` (raise when this
    rank and worker yield no sample; off by default, unlike webdataset, because more workers
    than shards is legitimate here). Giving an argument and its alias raises ``ValueError``,
    and so do ``resampled=True`` / ``repeat=True`` (use ``.with_epoch(n)``), ``cache_dir=`` and
    ``select_files=`` / ``rename_files=`` (profiles see whole samples); ``detshuffle`` is
    accepted (shuffles here are always deterministic by ``(seed, epoch)``).
    With ``store=`` each shard's profile is written to the store as it is read; with
    ``reference=`` and ``policy=`` drifted shards are monitored, skipped, reweighted or
    resampled.
    The profiles it writes keep each shard's metadata: its ``<url>.json`` sidecar, if any, and
    ``metadata=`` (a dict keyed by shard URL, or a callable of the URL); a source or
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
        featurizer: Any = None,
        drift_config: Any = None,
        probe: int = 256,
        split_by_node: bool | None = None,
        split_by_worker: bool | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        retries: int = 5,
        opener: Callable[..., object] | None = None,
        equalize: bool = False,
        metadata: Any = None,
        worker_handoff: bool = True,
        empty_check: bool = False,
        shardshuffle: bool | int | None = None,
        handler: Callable[[Exception], bool] | None = None,
        nodesplitter: Any = _NOT_GIVEN,
        workersplitter: Any = _NOT_GIVEN,
        resampled: bool = False,
        cache_dir: str | None = None,
        repeat: bool = False,
        detshuffle: bool = True,
        select_files: Callable[[str], bool] | None = None,
        rename_files: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__()
        _refuse_unsupported(
            resampled,
            cache_dir,
            repeat,
            {"select_files": select_files, "rename_files": rename_files},
        )
        del detshuffle  # shard and sample shuffles are always deterministic by (seed, epoch)
        shuffle = _one_of(
            "shuffle", shuffle, "shardshuffle", shardshuffle, _shard_shuffle(shardshuffle), True
        )
        on_error = _one_of("on_error", on_error, "handler", handler, handler, "raise")
        single_node = _splitter_name(nodesplitter) == "single_node_only"
        by_node, by_worker = _splits(nodesplitter, "node"), _splits(workersplitter, "worker")
        split_by_node = _one_of(
            "split_by_node", split_by_node, "nodesplitter", nodesplitter, by_node, True
        )
        split_by_worker = _one_of(
            "split_by_worker", split_by_worker, "workersplitter", workersplitter, by_worker, True
        )
        if equalize and store is None:
            raise ValueError(
                "equalize=True needs store= with the shards' profiles (their sample counts); "
                "without a store use .with_epoch(n) to give every rank n items"
            )
        if metadata is not None and store is None:
            raise ValueError(
                "metadata= is kept in the profiles the loader writes to its store: pass store= too"
            )
        if block_size < 4096:
            raise ValueError(f"block_size={block_size} is too small; use at least 4096 bytes")
        self.storage_options = storage_options
        self.shards: list[Shard] = expand_urls(urls, storage_options)
        self.shardshuffle = shuffle
        self.seed = seed
        self.handler = _error_handler(on_error)
        self.split_by_node = split_by_node
        self.split_by_worker = split_by_worker
        self.single_node = single_node
        self.empty_check = empty_check
        self.read_options = dict(
            block_size=block_size, max_member_size=max_member_size, retries=retries, opener=opener
        )
        self.stages: list[P.Stage] = []
        self.stats = ReadStats()
        self.epoch: int | None = None
        self._iterations = 0
        self._nsamples: int | None = None
        self._length: int | None = None
        self.equalize = equalize
        self.worker_handoff = worker_handoff
        self._rank_world: tuple[int, int] | None = None
        self._plan: list[dict] | None = None
        self._progress: _Progress | None = None
        self._resume: _Progress | None = None
        self.gate = None
        self._created = time.time()
        gated = store is not None or reference is not None or policy != "monitor"
        if gated or any(s.pinned for s in self.shards):
            # Versions key profiles and decisions; pinned shards are checked against storage
            # here, so a changed ETag or a deleted VersionId fails now, naming the shard.
            self.shards = stat_shards(self.shards, self.storage_options)
        if gated:
            self._setup_gate(store, reference, policy, featurizer, drift_config, probe, metadata)

    def _setup_gate(
        self, store, reference, policy, featurizer, drift_config, probe, metadata
    ) -> None:
        from .policy import ShardGate

        self.gate = ShardGate(
            store=store,
            reference=reference,
            policy=policy,
            featurizer=featurizer,
            config=drift_config,
            probe=probe,
            storage_options=self.storage_options,
            metadata=metadata,
            seed=self.seed,
        )

    # ------------------------------------------------------------------- fluent interface

    def compose(self, fn: Callable, *args: Any, **kwargs: Any) -> DriftDataset:
        """Append a stage ``fn(data, ctx, *args, **kwargs) -> iterator``; returns self.

        ``ctx`` (a ``pipeline.Context``) seeds random choices so that they resume exactly.
        A webdataset-style stage ``fn(src) -> iterator`` (such as ``webdataset.filters``'
        curried stages) is recognised when it is given alone and can be called with one
        argument but not with two. Unlike webdataset's, ``compose`` takes one stage and
        changes this dataset rather than returning a copy.
        """
        if not args and not kwargs and P.takes_source_only(fn):
            return self.compose(P._source_only, fn)
        self.stages.append(P.Stage(fn, args, kwargs))
        return self

    def shuffle(self, size: int, initial: int = 100) -> DriftDataset:
        """Shuffle samples in a buffer of ``size``, seeded by (seed, epoch, rank, worker)."""
        if size < 0:
            raise ValueError(f"shuffle size must be >= 0, got {size}")
        if size <= 1:
            return self
        return self.compose(P._shuffle, size, initial, len(self.stages))

    def decode(
        self,
        *specs: Any,
        handler: Callable[[Exception], bool] = P.reraise_exception,
        only: Iterable[str] | None = None,
        partial: bool = False,
        allow_pickle: bool = False,
    ) -> DriftDataset:
        """Decode fields: webdataset specs (``"pil"``, ``"rgb8"``, ``"torch"``...) or handlers."""
        decoder = P.Decoder(*specs, only=only, partial=partial, allow_pickle=allow_pickle)
        return self.compose(P._decode, decoder, handler)

    def map(
        self, fn: Callable, handler: Callable[[Exception], bool] = P.reraise_exception
    ) -> DriftDataset:
        return self.compose(P._map, fn, handler)

    def map_dict(
        self, handler: Callable[[Exception], bool] = P.reraise_exception, **fns: Callable
    ) -> DriftDataset:
        return self.compose(P._map_dict, fns, handler)

    def select(self, predicate: Callable[[Any], bool]) -> DriftDataset:
        return self.compose(P._select, predicate)

    def to_tuple(
        self,
        *keys: str,
        handler: Callable[[Exception], bool] = P.reraise_exception,
        missing_is_error: bool = True,
    ) -> DriftDataset:
        """Samples -> tuples of fields; ``"jpg;png"`` takes the first present. Under the
        reweight policy name ``"__weight__"`` to carry the sample weight along."""
        return self.compose(P._to_tuple, keys, missing_is_error, handler)

    def rename(
        self,
        handler: Callable[[Exception], bool] = P.reraise_exception,
        keep: bool = True,
        **names: str | Sequence[str],
    ) -> DriftDataset:
        """Rename fields, webdataset's way: ``new="old"`` or ``new="jpg;png"`` (the first
        present). With ``keep=True`` other fields stay (the renamed ones go); with
        ``keep=False`` only the new names remain. A missing field goes to ``handler``."""
        for new, old in names.items():
            if not (isinstance(old, str) and old) and not (
                isinstance(old, (list, tuple)) and old and all(isinstance(o, str) for o in old)
            ):
                raise ValueError(f"rename({new}={old!r}): give a field name or 'a;b' choices")
        choices = {
            new: old.split(";") if isinstance(old, str) else list(old) for new, old in names.items()
        }
        return self.compose(P._rename, choices, keep, handler)

    def unbatched(self) -> DriftDataset:
        """Split batches (tuples or dicts of equal-length columns) back into samples."""
        return self.compose(P._unbatched)

    def batched(
        self,
        batchsize: int,
        collation_fn: Callable | None = P.default_collation_fn,
        partial: bool = True,
    ) -> DriftDataset:
        if batchsize < 1:
            raise ValueError(f"batchsize must be >= 1, got {batchsize}")
        return self.compose(P._batched, batchsize, collation_fn, partial)

    def with_epoch(self, nsamples: int) -> DriftDataset:
        """Make an epoch exactly ``nsamples`` items (per rank and worker), repeating the shards
        in a new shuffle order if they run out: every rank then yields the same count."""
        if nsamples < 1:
            raise ValueError(f"with_epoch needs a positive count, got {nsamples}")
        self._nsamples = nsamples
        return self

    def with_length(self, n: int) -> DriftDataset:
        self._length = n
        return self

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("length unknown; call .with_length(n) first")
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds shard and sample shuffling (call it before each epoch)."""
        self.epoch = epoch

    # -------------------------------------------------------------------------- iteration

    def shards_for(self, where: Placement, epoch: int) -> list[Shard]:
        """The shards this rank and worker read in ``epoch``, in order.

        Iterator *i* of *N* gets shards ``i, i+N, ...`` of the epoch's order. Under
        ``equalize`` the shards that ``plan()`` reads are dealt out like that among themselves,
        so a skipped or excluded shard never takes a readable one's place (``_equal_split``).
        """
        shards = self._ordered(epoch)
        if self.equalize:
            return self._equal_split(shards, where.total)[where.index]
        return shards[where.index :: where.total]

    def _ordered(self, epoch: int) -> list[Shard]:
        """Every shard in ``epoch``'s order: shuffled by ``(seed, epoch)``, the same everywhere."""
        shards = list(self.shards)
        if self.shardshuffle:
            random.Random(f"{self.seed}/shards/{epoch}").shuffle(shards)
        return shards

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if _initialised():  # spawned DataLoader workers do not inherit the process group
            state["_rank_world"] = rank_and_world()
        return state

    def __iter__(self) -> Iterator:
        items = self._iterate()
        return P.hand_over(items) if self._hands_over() else items

    def _iterate(self) -> Iterator:
        if self.single_node:
            self._check_single_node()
        where = placement(self.split_by_node, self.split_by_worker, self._rank_world)
        epoch = self.epoch if self.epoch is not None else self._iterations
        progress = self._take_resume(epoch, where)
        resumed = progress is not None
        if progress is None:
            progress = _Progress(epoch, self._iterations, _where_tuple(where))
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
            if limit is None or progress.produced >= limit:
                progress.complete = True
            elif progress.yielded == 0:
                warnings.warn(
                    f"rank {where.rank} worker {where.worker}: no samples to repeat", stacklevel=2
                )
                progress.complete = True
            else:
                progress.next_sub()
        if self.empty_check and progress.produced == 0 and not any(progress.counts):
            raise ValueError(  # as webdataset's: no sample read, whatever the stages drop
                f"rank {where.rank} worker {where.worker} read no samples ({len(self.shards)} "
                f"shards for {where.total} ranks x workers, or every shard empty or skipped); "
                "pass empty_check=False to allow it"
            )

    def _check_single_node(self) -> None:
        """webdataset's ``nodesplitter=single_node_only``: more than one rank is an error."""
        world = placement(True, False, self._rank_world).world_size  # ranks, as if splitting
        if world > 1:
            raise ValueError(
                f"nodesplitter=single_node_only but there are {world} ranks: pass "
                "split_by_node=True (or nodesplitter=webdataset.split_by_node) to split shards "
                "across ranks, or split_by_node=False to read every shard on every rank"
            )

    def _hands_over(self) -> bool:
        """Whether items go through ``P.hand_over``: batches that a DataLoader worker passes
        straight to its collate_fn (not to a wrapping dataset, nor single samples, which the
        DataLoader may batch itself in the worker)."""
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if not self.worker_handoff or info is None or info.dataset is not self:
            return False
        fns = [st.fn for st in self.stages]
        # a custom stage after batching may unbatch
        return P._batched in fns and all(fn in _BUILT_IN for fn in fns[fns.index(P._batched) :])

    def _epoch_stream(
        self, where: Placement, epoch: int, progress: _Progress, resumed: bool = False
    ) -> Iterator:
        if self.gate is not None:  # seeds resampling: other draws in each epoch and pass
            self.gate.epoch, self.gate.repeat = epoch, progress.sub
            if not resumed:  # the shards a resumed pass must profile again are only its own
                self.gate.pinned = set()
            self.gate.first_pass = set(self.gate.pinned)
        epoch = _pass_seed(epoch, progress.sub)
        ctx = P.Context(self.seed, epoch, where.rank, where.worker)
        shards = self.shards_for(where, epoch)
        limit = self._limit(where, epoch) if self.equalize else None
        if not resumed or progress.yielded == 0 and not progress.counts:
            progress.counts, progress.source_done = [], False
            stream: Iterator = self._samples(shards, progress, limit)
            for stage in self.stages:
                stream = stage(stream, ctx)
            return stream
        return self._resumed_stream(shards, ctx, progress, limit)

    def _resumed_stream(
        self, shards: list[Shard], ctx: P.Context, progress: _Progress, limit: int | None
    ) -> Iterator:
        """Rebuild the stream and drop what was yielded; samples that only fed those items
        are placeholders, never read or decoded (whole shards of them are not even opened)."""
        consumed = sum(progress.counts)
        stages: list[Callable] = list(self.stages)
        if all(st.fn in (*_ONE_TO_ONE, P._shuffle, P._batched) for st in stages):
            needed: Container[int] = _still_due(
                stages, ctx, consumed, progress.source_done, progress.yielded
            )
            stages = [_replaying(st) for st in stages]
        else:  # a select or custom stage: replay everything through the real stages
            needed = range(consumed)
        stream: Iterator = self._samples(shards, progress, limit, needed)
        for stage in stages:
            stream = stage(stream, ctx)
        return itertools.islice(stream, progress.yielded, None)

    def _samples(
        self,
        shards: Iterable[Shard],
        progress: _Progress,
        limit: int | None = None,
        needed: Container[int] | None = None,
    ) -> Iterator[dict | _Skipped]:
        counts, pos = progress.counts, 0
        known = len(counts) if progress.source_done else len(counts) - 1
        for j, shard in enumerate(shards):
            if limit is not None and pos >= limit:
                break
            if needed is not None and j < known:  # finished before the state was saved
                yield from self._replay_shard(shard, pos, counts[j], needed)
                pos += counts[j]
                continue
            if j >= len(counts):
                counts.append(0)
            seen = counts[j]
            try:
                for i, sample in enumerate(self._shard_samples(shard)):
                    if i < seen:  # resuming inside this shard
                        yield sample if needed is not None and pos + i in needed else SKIPPED
                        continue
                    if limit is not None and pos + i >= limit:
                        break
                    counts[j] += 1
                    yield sample
            except ShardReadError as exn:
                self.stats.errors += 1
                self.stats.skipped_shards.append(redact(shard.url))
                if not self.handler(exn):
                    break
            pos += counts[j]
        progress.source_done = True

    def _replay_shard(self, shard: Shard, pos: int, count: int, needed: Container[int]) -> Iterator:
        """A shard finished before the state was saved: re-read it only if a sample of it is
        still due (in a shuffle buffer), through a copy of the gate that keeps no decisions."""
        if count == 0 or not any(i in needed for i in range(pos, pos + count)):
            yield from itertools.repeat(SKIPPED, count)
            return
        gate = None
        if self.gate is not None:
            gate = copy.copy(self.gate)
            gate.results, gate._stored = [], {}
        samples = itertools.islice(self._shard_samples(shard, gate), count)
        for i, sample in enumerate(samples):
            yield sample if pos + i in needed else SKIPPED

    def _shard_samples(self, shard: Shard, gate: Any = _END) -> Iterator[dict]:
        gate = self.gate if gate is _END else gate
        if gate is not None and not gate.before(shard):
            return
        samples = read_shard(shard, self.storage_options, stats=self.stats, **self.read_options)
        if gate is not None:
            samples = gate.observe(shard, samples)
        yield from samples

    # -------------------------------------------------------------------------- equalizing

    def plan(self) -> list[dict]:
        """Per shard, from the store only: ``{"url", "version", "n", "action"}``.

        ``n`` is the stored sample count (``None`` when the shard has no stored profile at its
        current version); ``action`` is ``"excluded"`` when ``driftloader quarantine`` put the
        shard version on the reference's exclusion list, ``"skip"`` when the skip policy drops
        it before reading it, else ``"read"``. Only ``"read"`` shards yield samples. It depends
        only on the store, so every rank agrees.
        """
        plan = self._plan or [self._shard_plan(shard) for shard in self.shards]
        if all(row["n"] is not None or row["action"] != "read" for row in plan):
            self._plan = plan  # complete: the store will not change it
        return [dict(row) for row in plan]

    def _shard_plan(self, shard: Shard) -> dict:
        from .drift import compare

        gate = self.gate
        stored = gate.store.get_profile(shard.url, shard.version) if gate and gate.store else None
        row = {"url": redact(shard.url), "version": shard.version, "n": None, "action": "read"}
        if stored is not None:
            row["n"] = int(stored.n)
        if gate is None or gate.store is None:
            return row
        if gate.reference_name is not None and gate._is_excluded(shard):  # as in gate.before
            row["action"] = "excluded"
        elif gate.policy == "skip" and gate.reference is not None:
            # a stored profile, else a stored probe that dropped the shard (as gate.before)
            seen = stored or gate.stored_probe(shard)
            if seen is not None and compare(seen, gate.reference, gate.config).drifted:
                row["action"] = "skip"
        return row

    def _equal_plan(self) -> dict[tuple[str, str | None], dict]:
        """``plan()`` by (url, version); refuses a shard to read without a stored count."""
        plan = {(s.url, s.version): row for s, row in zip(self.shards, self.plan())}
        missing = [r["url"] for r in plan.values() if r["n"] is None and r["action"] == "read"]
        if missing:
            raise ValueError(
                f"equalize=True needs a stored profile of every shard; {len(missing)} have none "
                f"(first: {missing[0]}): run `driftloader profile` on them, or use .with_epoch(n)"
            )
        return plan

    def _equal_split(self, shards: list[Shard], total: int) -> list[list[Shard]]:
        """``shards`` (in epoch order) dealt to ``total`` slices: those ``plan()`` reads
        round-robin, and the others (skipped or excluded) round-robin on their own. Slices then
        differ by at most one readable shard and each shard goes to exactly one slice. A slice
        lists its unread shards first: never opened, they cost no bytes, and the gate records
        their decisions before the ``equalize`` limit can stop the slice."""
        plan = self._equal_plan()
        read = [s for s in shards if plan[(s.url, s.version)]["action"] == "read"]
        unread = [s for s in shards if plan[(s.url, s.version)]["action"] != "read"]
        return [unread[i::total] + read[i::total] for i in range(total)]

    def _limit(self, where: Placement, epoch: int) -> int:
        """Samples per iterator under ``equalize``: the smallest rank x worker slice's count.

        Warns when that is 0, e.g. because fewer shards are read than there are iterators."""
        plan = self._equal_plan()
        parts = self._equal_split(self._ordered(epoch), where.total)
        rows = [[plan[(s.url, s.version)] for s in part] for part in parts]
        totals = [sum(r["n"] for r in part if r["action"] == "read") for part in rows]
        limit = min(totals)
        if limit == 0:
            readable = sum(r["action"] == "read" for part in rows for r in part)
            iterators = (
                f"{where.total} iterators ({where.world_size} ranks x {where.num_workers} "
                "DataLoader workers)"
            )
            if readable == 0:
                why = f"all {len(self.shards)} shards are skipped or excluded"
            elif readable < where.total:
                why = (
                    f"only {readable} of {len(self.shards)} shards are read (the others are "
                    f"skipped or excluded), fewer than the {iterators}; use fewer DataLoader "
                    "workers or ranks, or more (smaller) shards"
                )
            else:
                why = f"a slice of the {iterators} has only empty shards"
            warnings.warn(
                f"equalize=True: every iterator yields 0 samples this epoch: {why}",
                RuntimeWarning,
                stacklevel=2,
            )
        return limit

    # ------------------------------------------------------------------------- resumption

    def state_dict(self) -> dict:
        """This iterator's position, JSON-safe: epoch, shard order inputs, per-shard counts,
        items yielded, data versions and drift decisions so far (``load_state_dict`` resumes)."""
        progress = self._progress
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "shards": [[s.url, s.version] for s in self.shards],
            "set_epoch": self.epoch,
            "iterations": self._iterations if progress is None else progress.iterations,
            "epoch": None if progress is None else progress.epoch,
            "yielded": 0 if progress is None else progress.produced,
            "progress": None if progress is None else asdict(progress),
            "decisions": [] if self.gate is None else copy.deepcopy(self.gate.results),
            "first_pass": [] if self.gate is None else sorted(map(list, self.gate.first_pass)),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``: the next iteration of the saved epoch yields exactly the
        items not yet yielded, in the same order. Refuses other shards, versions or seeds."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a DriftDataset state of version {STATE_VERSION}: {state!r:.200}")
        try:
            self._load_state(state)
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed DriftDataset state ({e!r}): {state!r:.200}") from e

    def _load_state(self, state: dict) -> None:
        self._check_shards(state["shards"])
        if state["seed"] != self.seed:
            raise ValueError(
                f"state was saved with seed={state['seed']}, this dataset has {self.seed}"
            )
        self.epoch = state["set_epoch"]
        self._iterations = state["iterations"]
        raw = state["progress"]
        self._resume = None
        if raw is not None:
            self._resume = _Progress(
                **{**raw, "where": tuple(raw["where"]), "counts": list(raw["counts"])}
            )
            if self._resume.complete:
                self._iterations += 1
        self._progress = None
        if self.gate is not None:
            self.gate.results = copy.deepcopy(list(state["decisions"]))
            self.gate.pinned = {(url, version) for url, version in state.get("first_pass", [])}

    def _check_shards(self, saved: list) -> None:
        mine = [[s.url, s.version] for s in self.shards]
        if [list(x) for x in saved] == mine:
            return
        changed = [s for s, m in zip(saved, mine) if list(s) != m]
        detail = (
            f"{redact(changed[0][0])} was at version {changed[0][1]!r}"
            if changed
            else f"{len(saved)} shards then, {len(mine)} now"
        )
        raise VersionMismatch(
            f"cannot resume: the data changed since the state was saved ({detail}); "
            "resume against the same shards (pin them with a snapshot manifest) or start afresh"
        )

    def _take_resume(self, epoch: int, where: Placement) -> _Progress | None:
        resume, self._resume = self._resume, None
        if resume is None or resume.epoch != epoch:
            return None
        if tuple(resume.where) != _where_tuple(where):
            r, w, k, n = resume.where
            raise ValueError(
                f"state was saved by rank {r} of {w}, worker {k} of {n}; this iterator is rank "
                f"{where.rank} of {where.world_size}, worker {where.worker} of {where.num_workers}: "
                "resume with the same world size and workers (with DataLoader workers use "
                "torchdata's StatefulDataLoader, which saves one state per worker)"
            )
        return resume

    def drift_report(self, include_store: bool = True, epoch: int | None = None) -> list[dict]:
        """Per-shard decisions taken since this dataset was made: by this process and, with
        ``include_store``, by DataLoader workers and other ranks (read back from the catalog;
        the catalog keeps each shard's latest decision). Each row names its ``epoch``; pass
        ``epoch=`` for that epoch's rows only."""
        rows = self._drift_rows(include_store)
        return rows if epoch is None else [r for r in rows if r.get("epoch") == epoch]

    def _drift_rows(self, include_store: bool) -> list[dict]:
        if self.gate is None:
            return []
        rows = self.gate.report()
        store, name = self.gate.store, self.gate.reference_name
        if not include_store or store is None or name is None:
            return rows
        seen = {(r["url"], r["version"]) for r in rows}
        mine = {(redact(s.url), s.version) for s in self.shards}
        for row in store.catalog():
            key = (row.get("url"), row.get("version"))
            if (
                key in mine
                and key not in seen
                and row.get("reference") == name
                and row.get("policy") is not None
                and float(row.get("decided") or 0) >= self._created
            ):
                rows.append(row.to_dict())
                seen.add(key)
        return rows


def _pass_seed(epoch: int, sub: int) -> int:
    """What seeds pass ``sub`` of ``epoch`` under ``with_epoch`` (shard order, shuffles,
    resampling): the epoch itself for the first pass, and for the others a number no real
    epoch reaches, so that a repeat within epoch e never replays epoch e + 1."""
    return epoch if sub == 0 else epoch + (sub << 32)


def _where_tuple(where: Placement) -> tuple[int, int, int, int]:
    return (where.rank, where.world_size, where.worker, where.num_workers)


def _still_due(
    stages: list[P.Stage], ctx: P.Context, consumed: int, source_done: bool, k: int
) -> set[int]:
    """Source positions below ``consumed`` that are not in the first ``k`` items (they sit in a
    shuffle buffer or a partial batch), found by running the shuffle and batch stages on
    positions: their choices depend only on counts, never on contents."""
    stream: Iterator = iter(range(consumed)) if source_done else itertools.count()
    for st in stages:
        if st.fn is P._shuffle:
            stream = st(stream, ctx)
        elif st.fn is P._batched:
            size, _, partial = st.args
            stream = P._batched(stream, ctx, size, None, partial)
    done = bytearray(consumed)
    for item in itertools.islice(stream, k):
        for i in _flatten(item):
            if i < consumed:
                done[i] = 1
    return {i for i in range(consumed) if not done[i]}


def _flatten(item: Any) -> Iterator[int]:
    if isinstance(item, list):
        for x in item:
            yield from _flatten(x)
    else:
        yield item


def _replaying(stage: P.Stage) -> Callable[[Iterator, P.Context], Iterator]:
    """The stage, letting placeholders of already-yielded samples through untouched."""
    if stage.fn is P._shuffle:
        return stage
    if stage.fn is P._batched:
        size, collate, partial = stage.args

        def collate_or_skip(batch: list) -> Any:
            if any(x is SKIPPED for x in batch):
                return SKIPPED
            return collate(batch) if collate is not None else batch

        return lambda data, ctx: P._batched(data, ctx, size, collate_or_skip, partial)

    def one_by_one(data: Iterator, ctx: P.Context) -> Iterator:
        for item in data:
            if item is SKIPPED:
                yield item
            else:
                yield from stage(iter([item]), ctx)

    return one_by_one
