"""``DriftDataset``: a drop-in for ``webdataset.WebDataset`` that profiles and gates shards."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from torch.utils.data import IterableDataset

from . import pipeline as P
from .distributed import Placement, placement
from .errors import ShardReadError
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


class DriftDataset(IterableDataset):
    """Stream webdataset shards from any fsspec URL; optionally profile and gate them.

    Replaces the first call of a webdataset pipeline and keeps the rest::

        ds = DriftDataset("s3://bucket/shard-{000000..000127}.tar").shuffle(1000)
        ds = ds.decode("pil").to_tuple("jpg", "cls")

    Shards are shuffled by ``(seed, epoch)`` (call ``set_epoch``), then split across ranks and
    DataLoader workers so that each is read exactly once per epoch. ``on_error`` decides what a
    corrupt or unreadable shard does: ``"raise"`` (default), ``"skip"`` the rest of the shard
    (counted in ``stats``), ``"warn"``, or a webdataset-style ``handler(exn) -> bool``.
    With ``store=`` each shard's profile is written to the store as it is read; with
    ``reference=`` and ``policy=`` drifted shards are monitored, skipped or reweighted.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        shuffle: bool = True,
        seed: int = 0,
        storage_options: dict | None = None,
        on_error: str | Callable[[Exception], bool] = "raise",
        store: Any = None,
        reference: str | None = None,
        policy: str = "monitor",
        featurizer: Any = None,
        drift_config: Any = None,
        probe: int = 256,
        split_by_node: bool = True,
        split_by_worker: bool = True,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
        retries: int = 5,
        opener: Callable[..., object] | None = None,
    ) -> None:
        super().__init__()
        if block_size < 4096:
            raise ValueError(f"block_size={block_size} is too small; use at least 4096 bytes")
        self.storage_options = storage_options
        self.shards: list[Shard] = expand_urls(urls, storage_options)
        self.shardshuffle = shuffle
        self.seed = seed
        self.handler = _error_handler(on_error)
        self.split_by_node = split_by_node
        self.split_by_worker = split_by_worker
        self.read_options = dict(
            block_size=block_size, max_member_size=max_member_size, retries=retries, opener=opener
        )
        self.stages: list[P.Stage] = []
        self.stats = ReadStats()
        self.epoch: int | None = None
        self._iterations = 0
        self._nsamples: int | None = None
        self._length: int | None = None
        self.gate = None
        if store is not None or reference is not None or policy != "monitor":
            self._setup_gate(store, reference, policy, featurizer, drift_config, probe)

    def _setup_gate(self, store, reference, policy, featurizer, drift_config, probe) -> None:
        from .policy import ShardGate

        self.shards = stat_shards(self.shards, self.storage_options)
        self.gate = ShardGate(
            store=store,
            reference=reference,
            policy=policy,
            featurizer=featurizer,
            config=drift_config,
            probe=probe,
            storage_options=self.storage_options,
        )

    # ------------------------------------------------------------------- fluent interface

    def compose(self, fn: Callable, *args: Any, **kwargs: Any) -> DriftDataset:
        """Append a stage ``fn(data, ctx, *args, **kwargs) -> iterator``; returns self."""
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
        """The shards this rank and worker read in ``epoch``, in order."""
        shards = list(self.shards)
        if self.shardshuffle:
            random.Random(f"{self.seed}/shards/{epoch}").shuffle(shards)
        return shards[where.index :: where.total]

    def __iter__(self) -> Iterator:
        where = placement(self.split_by_node, self.split_by_worker)
        epoch = self.epoch if self.epoch is not None else self._iterations
        self._iterations += 1
        if self._nsamples is None:
            yield from self._epoch_stream(where, epoch)
            return
        produced, extra = 0, 0
        while produced < self._nsamples:
            count_before = produced
            for item in self._epoch_stream(where, epoch + extra):
                yield item
                produced += 1
                if produced >= self._nsamples:
                    return
            if produced == count_before:
                warnings.warn(
                    f"rank {where.rank} worker {where.worker}: no samples to repeat", stacklevel=2
                )
                return
            extra += 1

    def _epoch_stream(self, where: Placement, epoch: int) -> Iterator:
        ctx = P.Context(self.seed, epoch, where.rank, where.worker)
        stream: Iterator = self._samples(self.shards_for(where, epoch))
        for stage in self.stages:
            stream = stage(stream, ctx)
        return stream

    def _samples(self, shards: Iterable[Shard]) -> Iterator[dict]:
        for shard in shards:
            try:
                yield from self._shard_samples(shard)
            except ShardReadError as exn:
                self.stats.errors += 1
                self.stats.skipped_shards.append(redact(shard.url))
                if not self.handler(exn):
                    return

    def _shard_samples(self, shard: Shard) -> Iterator[dict]:
        if self.gate is not None and not self.gate.before(shard):
            return
        samples = read_shard(shard, self.storage_options, stats=self.stats, **self.read_options)
        if self.gate is not None:
            samples = self.gate.observe(shard, samples)
        yield from samples

    def drift_report(self) -> list[dict]:
        """Per-shard drift results seen so far by this process (and stored in the catalog)."""
        return [] if self.gate is None else self.gate.report()
