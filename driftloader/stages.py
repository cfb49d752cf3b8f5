"""The fluent pipeline's stages: what each does to the sample stream, and how it resumes.

Every stage is a picklable ``Stage`` subclass: ``stage(data, ctx) -> iterator``. Its class says
how an interrupted iteration resumes through it (``RESUME``):

* ``ONE_TO_ONE``: one item out per item in, whatever the item (decode, map, map_dict,
  to_tuple, rename); on resume, placeholders of items already yielded pass through untouched.
* ``POSITIONAL``: reorders or groups items by counts only, never by contents (shuffle,
  batched); on resume it runs on source positions to find which samples are still due
  (in its buffer), so only those are read and decoded again.
* ``REPLAY``: what it yields depends on the contents (select, unbatched, a custom stage); on
  resume every sample is read again and passes through it.

A class that does not say so is refused when it is defined: no stage falls back to a full
replay by omission. ``get_state()`` names the stage and the parameters its resume depends on
(class-constant keys); ``reset(state)`` refuses a state saved by another pipeline. To add a
stage: a subclass here with ``KIND``, ``RESUME`` (and, for ``POSITIONAL``, ``on_positions``),
a fluent method in ``fluent.py``, and a case in ``tests/test_stages.py``'s list.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from .handlers import Handler
from .handlers import reraise_exception as reraise
from .pipeline import Context, Decoder

ONE_TO_ONE = "one-to-one"
POSITIONAL = "positional"
REPLAY = "replay"
RESUMES = (ONE_TO_ONE, POSITIONAL, REPLAY)


class _Skipped:
    """Stands in for a sample that a resumed iterator already yielded: never decoded."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED = _Skipped()
STAGES: dict[str, type[Stage]] = {}  # every stage class by KIND (tests run over all of them)


class Stage:
    """One picklable step ``(data, ctx) -> iterator`` of a pipeline, and how it resumes."""

    KIND: ClassVar[str]
    RESUME: ClassVar[str]
    MAKES_BATCHES: ClassVar[bool] = False  # its items are batches
    KEEPS_BATCHES: ClassVar[bool] = False  # batches stay batches through it (see hands_over)
    KIND_KEY: ClassVar[str] = "kind"
    PARAMS_KEY: ClassVar[str] = "params"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "KIND" not in cls.__dict__ or cls.__dict__.get("RESUME") not in RESUMES:
            raise TypeError(
                f"stage class {cls.__name__} must set KIND and RESUME (one of {RESUMES}): "
                "how it resumes is part of what a stage is"
            )
        STAGES[cls.KIND] = cls

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        raise NotImplementedError

    def params(self) -> dict:
        """The JSON-safe parameters a resume through this stage depends on."""
        return {}

    def get_state(self) -> dict:
        return {self.KIND_KEY: self.KIND, self.PARAMS_KEY: self.params()}

    def reset(self, state: dict) -> None:
        """Accept ``state`` (from ``get_state``) to resume through; refuse another stage's."""
        if state != self.get_state():
            raise ValueError(
                f"cannot resume: the pipeline changed since the state was saved (a stage was "
                f"{state!r}, it is now {self.get_state()!r}); resume with the same stages"
            )

    def on_positions(self, positions: Iterator, ctx: Context) -> Iterator:
        """This stage run on source positions (ints, or lists of them once batched)."""
        if self.RESUME == ONE_TO_ONE:
            return positions
        raise TypeError(f"{self.KIND} depends on contents: it cannot run on positions")

    def replaying(self) -> Callable[[Iterator, Context], Iterator]:
        """This stage for a resumed stream, in which ``SKIPPED`` stands for yielded samples."""
        return self


class OneToOne(Stage):
    """A stage that maps each item to one item (or drops it through its handler on error)."""

    KIND = "one-to-one"
    RESUME = ONE_TO_ONE
    KEEPS_BATCHES = True

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def function(self) -> Callable[[Any], Any]:
        """The per-item function (made per iteration, so it may be a closure)."""
        raise NotImplementedError

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        return _apply(data, self.function(), self.handler)

    def replaying(self) -> Callable[[Iterator, Context], Iterator]:
        return self._replay

    def _replay(self, data: Iterable, ctx: Context) -> Iterator:
        fn = self.function()
        return _apply(data, lambda item: item if item is SKIPPED else fn(item), self.handler)


def _apply(data: Iterable, fn: Callable, handler: Handler) -> Iterator:
    for item in data:
        try:
            result = fn(item)
        except Exception as exn:
            if handler(exn):
                continue
            break
        if result is not None:
            yield result


class Decode(OneToOne):
    KIND = "decode"
    RESUME = ONE_TO_ONE

    def __init__(self, decoder: Decoder, handler: Handler) -> None:
        super().__init__(handler)
        self.decoder = decoder

    def function(self) -> Callable[[Any], Any]:
        return self.decoder


class Map(OneToOne):
    KIND = "map"
    RESUME = ONE_TO_ONE

    def __init__(self, fn: Callable, handler: Handler) -> None:
        super().__init__(handler)
        self.fn = fn

    def function(self) -> Callable[[Any], Any]:
        return self.fn


class MapDict(OneToOne):
    KIND = "map_dict"
    RESUME = ONE_TO_ONE

    def __init__(self, fns: dict[str, Callable], handler: Handler) -> None:
        super().__init__(handler)
        self.fns = fns

    def function(self) -> Callable[[Any], Any]:
        fns = self.fns

        def apply(sample: dict) -> dict:
            sample = dict(sample)
            for key, fn in fns.items():
                sample[key] = fn(sample[key])
            return sample

        return apply


class ToTuple(OneToOne):
    KIND = "to_tuple"
    RESUME = ONE_TO_ONE

    def __init__(self, keys: tuple[str, ...], missing_is_error: bool, handler: Handler) -> None:
        super().__init__(handler)
        self.keys, self.missing_is_error = keys, missing_is_error

    def function(self) -> Callable[[Any], Any]:
        choices = [key.split(";") for key in self.keys]
        missing_is_error = self.missing_is_error

        def pick(sample: dict) -> tuple:
            out = []
            for options in choices:
                for option in options:
                    if option in sample:
                        out.append(sample[option])
                        break
                else:
                    if missing_is_error:
                        raise ValueError(
                            f"sample {sample.get('__key__')!r} in {sample.get('__url__')} has "
                            f"no field {';'.join(options)!r} (fields: {sorted(sample)})"
                        )
                    out.append(None)
            return tuple(out)

        return pick


class Rename(OneToOne):
    """webdataset's ``rename``: ``choices`` maps each new name to old names, first present wins;
    ``keep`` keeps the fields not named (every old name listed goes)."""

    KIND = "rename"
    RESUME = ONE_TO_ONE

    def __init__(self, choices: dict[str, list[str]], keep: bool, handler: Handler) -> None:
        super().__init__(handler)
        self.choices, self.keep = choices, keep

    def function(self) -> Callable[[Any], Any]:
        choices, keep = self.choices, self.keep
        dropped = {old for options in choices.values() for old in options}

        def rename(sample: dict) -> dict:
            result = {k: v for k, v in sample.items() if k not in dropped} if keep else {}
            for new, options in choices.items():
                for option in options:
                    if option in sample:
                        result[new] = sample[option]
                        break
                else:
                    raise ValueError(
                        f"sample {sample.get('__key__')!r} in {sample.get('__url__')} has no "
                        f"field {';'.join(options)!r} to rename to {new!r} (fields: "
                        f"{sorted(sample)})"
                    )
            return result

        return rename


class Select(Stage):
    """Keeps the items ``predicate`` accepts: how many depends on contents, so it replays."""

    KIND = "select"
    RESUME = REPLAY
    KEEPS_BATCHES = True

    def __init__(self, predicate: Callable[[Any], bool]) -> None:
        self.predicate = predicate

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        predicate = self.predicate
        return (item for item in data if predicate(item))


class Shuffle(Stage):
    """Buffer shuffle seeded by (seed, epoch, rank, worker, salt): the same order on every
    rerun, and its choices depend only on counts, so a resume replays it on positions."""

    KIND = "shuffle"
    RESUME = POSITIONAL
    KEEPS_BATCHES = True

    def __init__(self, bufsize: int, initial: int, salt: int) -> None:
        self.bufsize, self.initial, self.salt = bufsize, initial, salt

    def params(self) -> dict:
        return {"bufsize": self.bufsize, "initial": self.initial, "salt": self.salt}

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        rng = ctx.rng(self.salt)
        bufsize = self.bufsize
        buf: list = []
        start = min(self.initial, bufsize)
        for item in data:
            buf.append(item)
            if len(buf) < bufsize and len(buf) < start:
                continue
            if len(buf) >= start:
                start = bufsize
                index = rng.randrange(len(buf))
                buf[index], buf[-1] = buf[-1], buf[index]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    def on_positions(self, positions: Iterator, ctx: Context) -> Iterator:
        return self(positions, ctx)


class Batched(Stage):
    """Groups items into lists of ``size`` (collated by ``collation_fn`` if given)."""

    KIND = "batched"
    RESUME = POSITIONAL
    MAKES_BATCHES = True
    KEEPS_BATCHES = True

    def __init__(self, size: int, collation_fn: Callable | None, partial: bool) -> None:
        self.size, self.collation_fn, self.partial = size, collation_fn, partial

    def params(self) -> dict:
        return {"size": self.size, "partial": self.partial}

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        return _batches(data, self.size, self.collation_fn, self.partial)

    def on_positions(self, positions: Iterator, ctx: Context) -> Iterator:
        return _batches(positions, self.size, None, self.partial)

    def replaying(self) -> Callable[[Iterator, Context], Iterator]:
        return self._replay

    def _replay(self, data: Iterable, ctx: Context) -> Iterator:
        collate = self.collation_fn

        def collate_or_skip(batch: list) -> Any:
            if any(x is SKIPPED for x in batch):
                return SKIPPED
            return collate(batch) if collate is not None else batch

        return _batches(data, self.size, collate_or_skip, self.partial)


def _batches(data: Iterable, size: int, collate: Callable | None, partial: bool) -> Iterator:
    batch: list = []
    for item in data:
        batch.append(item)
        if len(batch) == size:
            yield collate(batch) if collate is not None else batch
            batch = []
    if batch and partial:
        yield collate(batch) if collate is not None else batch


class Unbatched(Stage):
    """webdataset's ``unbatched``: batches (tuples / lists of columns, or dicts of columns of
    one length) back into samples; how many depends on the batches, so it replays."""

    KIND = "unbatched"
    RESUME = REPLAY

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        for batch in data:
            yield from _unbatch(batch)


def _unbatch(batch: Any) -> Iterator:
    if isinstance(batch, (list, tuple)):
        for i in range(len(batch[0]) if batch else 0):
            yield tuple(column[i] for column in batch)
    elif isinstance(batch, dict):
        lengths = {len(v) for v in batch.values()}
        if len(lengths) > 1:
            sizes = {k: len(v) for k, v in batch.items()}
            raise ValueError(f"cannot unbatch a dict with columns of different lengths: {sizes}")
        for i in range(lengths.pop() if lengths else 0):
            yield {k: v[i] for k, v in batch.items()}
    else:
        raise ValueError(f"cannot unbatch a {type(batch).__name__}: not a tuple or a dict")


class Slice(Stage):
    """webdataset's ``slice``: ``itertools.islice(items, *args)``; by counts only."""

    KIND = "slice"
    RESUME = POSITIONAL
    KEEPS_BATCHES = True

    def __init__(self, args: tuple[int | None, ...]) -> None:
        self.args = args

    def params(self) -> dict:
        return {"args": list(self.args)}

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        return itertools.islice(data, *self.args)

    def on_positions(self, positions: Iterator, ctx: Context) -> Iterator:
        return self(positions, ctx)


class RSample(Stage):
    """webdataset's ``rsample``: keeps each item with probability ``p``, one draw per item
    from a generator seeded by (seed, epoch, rank, worker, salt): by counts only."""

    KIND = "rsample"
    RESUME = POSITIONAL
    KEEPS_BATCHES = True

    def __init__(self, p: float, salt: int) -> None:
        self.p, self.salt = p, salt

    def params(self) -> dict:
        return {"p": self.p, "salt": self.salt}

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        rng, p = ctx.rng(self.salt), self.p
        return (item for item in data if rng.random() < p)

    def on_positions(self, positions: Iterator, ctx: Context) -> Iterator:
        return self(positions, ctx)


class MapTuple(OneToOne):
    """webdataset's ``map_tuple``: function i (None: identity) applied to field i."""

    KIND = "map_tuple"
    RESUME = ONE_TO_ONE

    def __init__(self, fns: tuple[Callable | None, ...], handler: Handler) -> None:
        super().__init__(handler)
        self.fns = fns

    def function(self) -> Callable[[Any], Any]:
        fns = self.fns

        def apply(sample: Any) -> tuple:
            if not isinstance(sample, (list, tuple)):
                raise ValueError(
                    f"map_tuple needs tuples (use .to_tuple first), got {sample!r:.80}"
                )
            out = list(sample)
            for i in range(min(len(fns), len(out))):
                if fns[i] is not None:
                    out[i] = fns[i](out[i])
            return tuple(out)

        return apply


class LogKeys(OneToOne):
    """webdataset's ``log_keys``: appends ``index, worker, rank, key`` lines to ``logfile``
    (nothing when it is None or empty). A resume logs only the items it yields again."""

    KIND = "log_keys"
    RESUME = ONE_TO_ONE

    def __init__(self, logfile: str | None) -> None:
        super().__init__(reraise)
        self.logfile = logfile

    def params(self) -> dict:
        return {"logfile": self.logfile}

    def function(self) -> Callable[[Any], Any]:
        logfile, counter = self.logfile, itertools.count()
        if not logfile:
            return lambda sample: sample

        def log(sample: Any) -> Any:
            get = sample.get if isinstance(sample, dict) else lambda _: None
            line = f"{next(counter)}\t{get('__worker__')}\t{get('__rank__')}\t{get('__key__')}\n"
            with open(logfile, "a") as stream:
                stream.write(line)
            return sample

        return log


class XDecode(OneToOne):
    """webdataset's ``xdecode`` (decoders by file pattern), run by webdataset itself."""

    KIND = "xdecode"
    RESUME = ONE_TO_ONE

    def __init__(self, args: tuple, kwargs: dict) -> None:
        super().__init__(reraise)
        self.args, self.kwargs = args, kwargs

    def function(self) -> Callable[[Any], Any]:
        from webdataset import filters

        decode = filters.xdecode(*self.args, **self.kwargs)
        return lambda sample: next(iter(decode(iter([sample]))))


class Custom(Stage):
    """A user's stage ``fn(data, ctx, *args, **kwargs)``: unknown to us, so it replays."""

    KIND = "custom"
    RESUME = REPLAY

    def __init__(self, fn: Callable, args: tuple = (), kwargs: dict | None = None) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        return iter(self.fn(data, ctx, *self.args, **self.kwargs))


class SourceOnly(Stage):
    """A webdataset-style stage ``fn(src)``, which takes no context: it replays."""

    KIND = "webdataset"
    RESUME = REPLAY

    def __init__(self, fn: Callable[[Iterable], Iterable]) -> None:
        self.fn = fn

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        return iter(self.fn(data))


def takes_source_only(fn: Callable) -> bool:
    """Whether ``fn`` can be called with one positional argument but not with two."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins: assume driftloader's (data, ctx)
        return False

    def binds(*args: Any) -> bool:
        try:
            signature.bind(*args)
        except TypeError:
            return False
        return True

    return binds(None) and not binds(None, None)


# --------------------------------------------------------------------- a pipeline's stages


def hands_over_batches(stages: list[Stage]) -> bool:
    """Whether the pipeline's items are batches: it batches, and every stage after that keeps
    batches batches (a custom stage may unbatch)."""
    first = next((i for i, st in enumerate(stages) if st.MAKES_BATCHES), None)
    return first is not None and all(st.KEEPS_BATCHES for st in stages[first:])


def replays_positions(stages: list[Stage]) -> bool:
    """Whether a resume can find the samples still due from positions alone (no REPLAY stage)."""
    return all(st.RESUME != REPLAY for st in stages)


def still_due(
    stages: list[Stage], ctx: Context, consumed: int, source_done: bool, k: int
) -> set[int]:
    """Source positions below ``consumed`` that are not in the first ``k`` items (they sit in a
    shuffle buffer or a partial batch), found by running the stages on positions."""
    stream: Iterator = iter(range(consumed)) if source_done else itertools.count()
    for st in stages:
        stream = st.on_positions(stream, ctx)
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


def check_states(stages: list[Stage], states: list[dict]) -> None:
    """``reset`` every stage to its saved state; refuses a pipeline of another length."""
    if len(states) != len(stages):
        raise ValueError(
            f"cannot resume: the state was saved by a pipeline of {len(states)} stages, this one "
            f"has {len(stages)}; resume with the same stages"
        )
    for stage, state in zip(stages, states):
        stage.reset(state)


del STAGES[OneToOne.KIND]  # an abstract base, not a stage of its own
