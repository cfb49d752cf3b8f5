"""Per-sample stages with webdataset's semantics: decode, shuffle, map, select, to_tuple, rename,
batched, unbatched.

Each stage is a small generator ``_stage(data, ctx, ...)``; ``ctx`` carries the iteration's
seed, epoch, rank and worker so that shuffling is reproducible (and resumable).
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import random
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import DriftloaderError
from .npy import load_npy

Handler = Callable[[Exception], bool]


def reraise_exception(exn: Exception) -> bool:
    """Error handler: stop by raising (the default)."""
    raise exn


def warn_and_continue(exn: Exception) -> bool:
    """Error handler: warn and go on with the next item."""
    warnings.warn(repr(exn), stacklevel=2)
    return True


def ignore_and_continue(exn: Exception) -> bool:
    """Error handler: go on silently (the caller still counts what was skipped)."""
    return True


@dataclass(frozen=True)
class Context:
    """Where an iteration runs: seeds every random choice of its stages."""

    seed: int = 0
    epoch: int = 0
    rank: int = 0
    worker: int = 0

    def rng(self, salt: int) -> random.Random:
        return random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{self.worker}/{salt}")


# ------------------------------------------------------------------------------- decoding


class DecodeError(DriftloaderError, ValueError):
    """A field could not be decoded; names the sample and the field."""


def npy_loads(data: bytes) -> np.ndarray:
    """Decode ``.npy`` bytes like ``np.load`` without pickle (strict: ``driftloader.npy``)."""
    return load_npy(data, copy=True)


def _unpickle(data: bytes) -> Any:
    return pickle.loads(data)


def _torch_loads(data: bytes, weights_only: bool = True) -> Any:
    return torch.load(io.BytesIO(data), weights_only=weights_only, map_location="cpu")


def _tenbin(data: bytes) -> Any:
    from webdataset import tenbin

    return tenbin.decode_buffer(data)


def _msgpack(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data)


def _npz(data: bytes) -> Any:
    return dict(np.load(io.BytesIO(data), allow_pickle=False))


def _cbor(data: bytes) -> Any:
    import cbor

    return cbor.loads(data)


def _text(data: bytes) -> str:
    return data.decode("utf-8")


BASIC_DECODERS: dict[str, Callable[[bytes], Any]] = {
    **dict.fromkeys(["txt", "text", "transcript"], _text),
    **dict.fromkeys(["cls", "cls2", "class", "count", "index", "inx", "id"], int),
    **dict.fromkeys(["json", "jsn"], json.loads),
    "pth": _torch_loads,
    "ten": _tenbin,
    "tb": _tenbin,
    "mp": _msgpack,
    "msg": _msgpack,
    "npy": npy_loads,
    "npz": _npz,
    "cbor": _cbor,
}
PICKLE_EXTENSIONS = ("pkl", "pickle", "pyd")


def _handler_for(spec: Any) -> Callable[[str, bytes], Any]:
    if callable(spec):
        return spec
    if isinstance(spec, str):
        from webdataset import autodecode

        if spec in autodecode.imagespecs:
            return autodecode.ImageHandler(spec)
        if spec in ("torchaudio", "torchvideo"):
            return getattr(autodecode, spec)
    raise ValueError(f"unknown decoder spec {spec!r}; use an image spec like 'pil' or a handler")


class Decoder:
    """Decode sample fields by extension, like ``webdataset.autodecode.Decoder`` but faster.

    User handlers (image specs like ``"pil"``, ``"rgb8"``, ``"torch"``, or callables
    ``handler(key, data) -> value | None``) are tried first; basic types (txt, cls, json, npy,
    ...) use a direct table. Pickled fields stay bytes unless ``allow_pickle=True``.
    """

    def __init__(
        self,
        *specs: Any,
        only: Iterable[str] | None = None,
        partial: bool = False,
        allow_pickle: bool = False,
    ) -> None:
        self.handlers = [_handler_for(spec) for spec in specs]
        self.only = set(only.split()) if isinstance(only, str) else (set(only) if only else None)
        self.partial = partial
        self.basic = dict(BASIC_DECODERS)
        if allow_pickle:
            self.basic.update(dict.fromkeys(PICKLE_EXTENSIONS, _unpickle))
            self.basic["pth"] = partial_torch_loads_unsafe
        self._warned: set[str] = set()

    def decode1(self, key: str, data: bytes) -> Any:
        if key.endswith(".gz"):
            return self.decode1(key[:-3], gzip.decompress(data))
        dotted = "." + key
        for handler in self.handlers:
            result = handler(dotted, data)
            if result is not None:
                return result
        ext = key.rsplit(".", 1)[-1]
        decoder = self.basic.get(ext)
        if decoder is not None:
            return decoder(data)
        if ext in PICKLE_EXTENSIONS and ext not in self._warned:
            self._warned.add(ext)
            warnings.warn(f"field {key!r} left as bytes: pickle decoding is off", stacklevel=3)
        return data

    def __call__(self, sample: dict) -> dict:
        result = {}
        for key, value in sample.items():
            if key[:2] == "__" or (self.only is not None and key not in self.only):
                result[key] = value
            elif isinstance(value, bytes):
                try:
                    result[key] = self.decode1(key, value)
                except Exception as e:
                    raise DecodeError(
                        f"cannot decode field {key!r} of sample {sample.get('__key__')!r} "
                        f"in {sample.get('__url__')}: {e}"
                    ) from e
            else:
                result[key] = value
        return result


def partial_torch_loads_unsafe(data: bytes) -> Any:
    return _torch_loads(data, weights_only=False)


# --------------------------------------------------------------------------------- stages


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


def _decode(data: Iterable, ctx: Context, decoder: Decoder, handler: Handler) -> Iterator:
    return _apply(data, decoder, handler)


def _map(data: Iterable, ctx: Context, fn: Callable, handler: Handler) -> Iterator:
    return _apply(data, fn, handler)


def _map_dict(data: Iterable, ctx: Context, fns: dict, handler: Handler) -> Iterator:
    def apply(sample: dict) -> dict:
        sample = dict(sample)
        for key, fn in fns.items():
            sample[key] = fn(sample[key])
        return sample

    return _apply(data, apply, handler)


def _select(data: Iterable, ctx: Context, predicate: Callable[[Any], bool]) -> Iterator:
    for item in data:
        if predicate(item):
            yield item


def _to_tuple(
    data: Iterable, ctx: Context, keys: tuple[str, ...], missing_is_error: bool, handler: Handler
) -> Iterator:
    choices = [key.split(";") for key in keys]

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
                        f"sample {sample.get('__key__')!r} in {sample.get('__url__')} has no field "
                        f"{';'.join(options)!r} (fields: {sorted(sample)})"
                    )
                out.append(None)
        return tuple(out)

    return _apply(data, pick, handler)


def _rename(
    data: Iterable, ctx: Context, choices: dict[str, list[str]], keep: bool, handler: Handler
) -> Iterator:
    """webdataset's ``rename``: ``choices`` maps each new name to old names, first present wins;
    ``keep`` keeps the fields not named (every old name listed goes)."""
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
                    f"sample {sample.get('__key__')!r} in {sample.get('__url__')} has no field "
                    f"{';'.join(options)!r} to rename to {new!r} (fields: {sorted(sample)})"
                )
        return result

    return _apply(data, rename, handler)


def _shuffle(data: Iterable, ctx: Context, bufsize: int, initial: int, salt: int) -> Iterator:
    """Buffer shuffle seeded by (seed, epoch, rank, worker): the same order on every rerun."""
    rng = ctx.rng(salt)
    buf: list = []
    start = min(initial, bufsize)
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


def _batched(
    data: Iterable, ctx: Context, size: int, collation_fn: Callable | None, partial_: bool
) -> Iterator:
    batch: list = []
    for item in data:
        batch.append(item)
        if len(batch) == size:
            yield collation_fn(batch) if collation_fn is not None else batch
            batch = []
    if batch and partial_:
        yield collation_fn(batch) if collation_fn is not None else batch


def _unbatched(data: Iterable, ctx: Context) -> Iterator:
    """webdataset's ``unbatched``: batches (tuples / lists of columns, or dicts of columns of
    one length) back into samples."""
    for batch in data:
        if isinstance(batch, (list, tuple)):
            for i in range(len(batch[0]) if batch else 0):
                yield tuple(column[i] for column in batch)
        elif isinstance(batch, dict):
            lengths = {len(v) for v in batch.values()}
            if len(lengths) > 1:
                sizes = {k: len(v) for k, v in batch.items()}
                raise ValueError(
                    f"cannot unbatch a dict with columns of different lengths: {sizes}"
                )
            for i in range(lengths.pop() if lengths else 0):
                yield {k: v[i] for k, v in batch.items()}
        else:
            raise ValueError(f"cannot unbatch a {type(batch).__name__}: not a tuple or a dict")


def _source_only(data: Iterable, ctx: Context, fn: Callable[[Iterable], Iterable]) -> Iterator:
    """A webdataset-style stage ``fn(src)``, which takes no context."""
    return iter(fn(data))


def takes_source_only(fn: Callable) -> bool:
    """Whether ``fn`` can be called with one positional argument but not with two."""
    import inspect

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


def default_collation_fn(samples: list) -> Any:
    """Webdataset's collation: tensors stacked, numbers into arrays, others into lists."""
    from webdataset.filters import default_collation_fn as collate

    return collate(samples)


# ------------------------------------------------------------------- DataLoader hand-off

# Batches up to this size cross from DataLoader workers by value, larger ones through shared
# memory as torch makes them (see hand_over).
BY_VALUE_LIMIT = 1 << 20
WORKER_SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005
_TORCH_DTYPES: dict[np.dtype, Any] = {}


def _torch_dtype(dtype: np.dtype) -> Any:
    """The dtype ``torch.from_numpy`` gives arrays of ``dtype``; None if torch has none."""
    if dtype.kind not in "biufc" or not dtype.isnative:
        return None
    if dtype not in _TORCH_DTYPES:
        try:
            _TORCH_DTYPES[dtype] = torch.from_numpy(np.empty(0, dtype)).dtype
        except TypeError:  # e.g. float128
            _TORCH_DTYPES[dtype] = None
    return _TORCH_DTYPES[dtype]


def _map_arrays(item: Any, fn: Callable[[np.ndarray], Any]) -> Any:
    """``item`` with ``fn`` applied to the numpy arrays that torch has a dtype for, through
    tuples, namedtuples, lists and dicts; anything else is kept."""
    if isinstance(item, np.ndarray):
        return item if _torch_dtype(item.dtype) is None else fn(item)
    if type(item) in (tuple, list):
        return type(item)(_map_arrays(x, fn) for x in item)
    if isinstance(item, tuple) and hasattr(item, "_fields"):
        return type(item)(*(_map_arrays(x, fn) for x in item))
    if type(item) is dict:
        return {k: _map_arrays(v, fn) for k, v in item.items()}
    return item


def _tensor_from(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)


class PickledTensor(torch.Tensor):
    """A CPU tensor that pickles by value, as its numpy array, and unpickles as a plain tensor;
    operations on it give plain tensors."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol: int) -> tuple:
        return (_tensor_from, (self.numpy(),))


def as_tensors(item: Any) -> Any:
    """``item`` with its numeric numpy arrays as tensors (as DataLoader's default conversion
    makes them, sharing their memory): ``PickledTensor`` if they add up to at most
    ``BY_VALUE_LIMIT`` bytes, else plain tensors, which torch moves to shared memory."""
    total = 0

    def count(array: np.ndarray) -> np.ndarray:
        nonlocal total
        total += array.nbytes
        return array

    _map_arrays(item, count)
    kind = PickledTensor if total <= BY_VALUE_LIMIT else torch.Tensor

    def convert(array: np.ndarray) -> torch.Tensor:
        if not (array.flags.writeable and array.flags.c_contiguous):
            array = np.array(array)  # what from_numpy takes without a warning
        return torch.from_numpy(array).as_subclass(kind)

    return _map_arrays(item, convert)


def hand_over(items: Iterable) -> Iterator:
    """``items`` as a DataLoader worker should yield them: ``as_tensors`` of each, produced under
    a short GIL switch interval.

    DataLoader's default conversion makes tensors of numpy arrays, and torch sends every tensor
    to the main process as a shared-memory segment whose file descriptor the main process then
    fetches from the worker's resource-sharer thread, in a socket handshake of a few messages;
    that thread needs the GIL for each, which decoding in this thread holds until the switch
    interval runs out. On 2 busy cores that is ~1-5 ms per tensor, during which the main
    process, which takes batches in order from the workers in turn, waits: more than copying
    a small batch through the pipe. Helper threads (that one, the queue's feeder that pickles
    batches) get the GIL sooner with a shorter interval; only waiting threads are switched to.
    """
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, WORKER_SWITCH_INTERVAL))
    try:
        for item in items:
            yield as_tensors(item)
    finally:
        sys.setswitchinterval(switch)


class Stage:
    """A picklable stage ``(data, ctx) -> iterator``: a generator function and its arguments."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self, data: Iterable, ctx: Context) -> Iterator:
        return self.fn(data, ctx, *self.args, **self.kwargs)
