"""The fluent methods of ``DriftDataset`` (webdataset's ``FluidInterface``): each appends a stage.

A class using the mixin has ``stages`` (a list of ``stages.Stage``), ``_nsamples`` and
``_length``. Unlike webdataset's, the methods change the dataset and return it (no copy).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import stages as S
from .handlers import Handler, reraise_exception
from .pipeline import Decoder, default_collation_fn


class FluidInterface:
    """``compose``, ``shuffle``, ``decode``, ``map``, ``map_dict``, ``select``, ``to_tuple``,
    ``rename``, ``batched``, ``unbatched``, ``with_epoch``, ``with_length``."""

    stages: list[S.Stage]
    _nsamples: int | None
    _length: int | None
    _repetitions: int | None  # passes per iteration (None: until _nsamples)

    def append(self, stage: S.Stage) -> Any:
        """Append a ``stages.Stage``; returns self."""
        self.stages.append(stage)
        return self

    def compose(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Append a stage ``fn(data, ctx, *args, **kwargs) -> iterator``; returns self.

        ``ctx`` (a ``pipeline.Context``) seeds random choices so that they resume exactly.
        A webdataset-style stage ``fn(src) -> iterator`` (such as ``webdataset.filters``'
        curried stages) is recognised when it is given alone and can be called with one
        argument but not with two. Unlike webdataset's, ``compose`` takes one stage and
        changes this dataset rather than returning a copy. A resume replays every sample
        through a custom stage (see ``stages.REPLAY``).
        """
        if isinstance(fn, S.Stage) and not args and not kwargs:
            return self.append(fn)
        if not args and not kwargs and S.takes_source_only(fn):
            return self.append(S.SourceOnly(fn))
        return self.append(S.Custom(fn, args, kwargs))

    def shuffle(self, size: int, initial: int = 100) -> Any:
        """Shuffle samples in a buffer of ``size``, seeded by (seed, epoch, rank, worker)."""
        if size < 0:
            raise ValueError(f"shuffle size must be >= 0, got {size}")
        if size <= 1:
            return self
        return self.append(S.Shuffle(size, initial, len(self.stages)))

    def decode(
        self,
        *specs: Any,
        handler: Handler = reraise_exception,
        only: Iterable[str] | None = None,
        partial: bool = False,
        allow_pickle: bool = False,
    ) -> Any:
        """Decode fields: webdataset specs (``"pil"``, ``"rgb8"``, ``"torch"``...) or handlers."""
        decoder = Decoder(*specs, only=only, partial=partial, allow_pickle=allow_pickle)
        return self.append(S.Decode(decoder, handler))

    def map(self, fn: Callable, handler: Handler = reraise_exception) -> Any:
        return self.append(S.Map(fn, handler))

    def map_dict(self, handler: Handler = reraise_exception, **fns: Callable) -> Any:
        return self.append(S.MapDict(fns, handler))

    def select(self, predicate: Callable[[Any], bool]) -> Any:
        return self.append(S.Select(predicate))

    def to_tuple(
        self, *keys: str, handler: Handler = reraise_exception, missing_is_error: bool = True
    ) -> Any:
        """Samples -> tuples of fields; ``"jpg;png"`` takes the first present. Under the
        reweight policy name ``"__weight__"`` to carry the sample weight along."""
        return self.append(S.ToTuple(keys, missing_is_error, handler))

    def rename(
        self, handler: Handler = reraise_exception, keep: bool = True, **names: str | Sequence[str]
    ) -> Any:
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
        return self.append(S.Rename(choices, keep, handler))

    def unbatched(self) -> Any:
        """Split batches (tuples or dicts of equal-length columns) back into samples."""
        return self.append(S.Unbatched())

    def batched(
        self,
        batchsize: int,
        collation_fn: Callable | None = default_collation_fn,
        partial: bool = True,
    ) -> Any:
        if batchsize < 1:
            raise ValueError(f"batchsize must be >= 1, got {batchsize}")
        return self.append(S.Batched(batchsize, collation_fn, partial))

    def listed(self, batchsize: int, partial: bool = True) -> Any:
        """webdataset's ``listed``: lists of ``batchsize`` items, not collated."""
        return self.batched(batchsize, collation_fn=None, partial=partial)

    def slice(self, *args: int | None) -> Any:
        """webdataset's ``slice``: ``itertools.islice(items, *args)`` (per rank and worker)."""
        try:
            itertools.islice((), *args)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"slice{args!r}: give itertools.islice's stop or start, stop[, step]"
            ) from e
        return self.append(S.Slice(tuple(args)))

    def rsample(self, p: float = 0.5) -> Any:
        """webdataset's ``rsample``: keep each item with probability ``p`` (seeded, so a rerun
        or a resume keeps the same items)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"rsample(p={p!r}): p must be between 0 and 1")
        return self.append(S.RSample(float(p), len(self.stages)))

    def map_tuple(self, *fns: Callable | None, handler: Handler = reraise_exception) -> Any:
        """webdataset's ``map_tuple``: apply function i to field i of tuples (None: as is)."""
        for fn in fns:
            if fn is not None and not callable(fn):
                raise ValueError(f"map_tuple: {fn!r} is not callable")
        return self.append(S.MapTuple(fns, handler))

    def log_keys(self, logfile: str | None = None) -> Any:
        """webdataset's ``log_keys``: append ``index, worker, rank, key`` lines to ``logfile``."""
        return self.append(S.LogKeys(logfile))

    def xdecode(self, *args: Any, **kwargs: Any) -> Any:
        """webdataset's ``xdecode`` (decoders by file pattern, ``must_decode=True``)."""
        return self.append(S.XDecode(args, kwargs))

    def mcached(self) -> Any:
        raise NotImplementedError(
            "mcached() keeps every sample in memory and replays it, which a streaming, gated "
            "dataset cannot do: read from local copies of the shards, or use .with_epoch(n)"
        )

    def lmdb_cached(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "lmdb_cached() caches samples outside the shards, so their profiles and drift "
            "decisions would no longer apply: copy the shards to local disk and read those"
        )

    def repeat(self, nepochs: int | None = None, nbatches: int | None = None) -> Any:
        """webdataset's ``repeat``: iterate the whole pipeline ``nepochs`` times (None or <= 0:
        forever), each pass in a new shard and shuffle order, stopping after ``nbatches`` items
        in all (None or <= 0: no limit); stops early when a pass yields nothing."""
        self._repetitions = nepochs if nepochs is not None and nepochs > 0 else None
        self._nsamples = nbatches if nbatches is not None and nbatches > 0 else None
        return self

    def with_epoch(self, nsamples: int) -> Any:
        """Make an epoch exactly ``nsamples`` items (per rank and worker), repeating the shards
        in a new shuffle order if they run out: every rank then yields the same count."""
        if nsamples < 1:
            raise ValueError(f"with_epoch needs a positive count, got {nsamples}")
        self._nsamples, self._repetitions = nsamples, None
        return self

    def with_length(self, n: int) -> Any:
        self._length = n
        return self

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("length unknown; call .with_length(n) first")
        return self._length
