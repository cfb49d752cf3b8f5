"""What the per-sample stages (``stages.py``) work with: the iteration ``Context``, webdataset's
decoders without pickle, webdataset's collation, and the hand-over of batches from DataLoader
workers (``hand_over``). The error handlers live in ``handlers.py`` and are re-exported here.
"""

from __future__ import annotations

import functools
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
from webdataset import DecodingError

from .errors import DriftloaderError
from .handlers import Handler, ignore_and_continue, reraise_exception, warn_and_continue
from .npy import load_npy

__all__ = [
    "BASIC_DECODERS",
    "Context",
    "Decoder",
    "DecodeError",
    "Handler",
    "as_tensors",
    "default_collation_fn",
    "hand_over",
    "ignore_and_continue",
    "npy_loads",
    "reraise_exception",
    "warn_and_continue",
]


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


class DecodeError(DriftloaderError, ValueError, DecodingError):
    """A field could not be decoded; names the sample and the field. It is webdataset's
    ``DecodingError`` too, so code that catches that catches it."""

    def __init__(
        self,
        message: str,
        url: str | None = None,
        key: str | None = None,
        k: str | None = None,
        sample: dict | None = None,
    ) -> None:
        ValueError.__init__(self, message)
        self.url, self.key, self.k, self.sample = url, key, k, sample

    __str__ = ValueError.__str__


def npy_loads(data: bytes) -> np.ndarray:
    """Decode ``.npy`` bytes like ``np.load`` without pickle (strict: ``driftloader.npy``):
    a read-only view of the sample's bytes where safe (no copy), else a copy."""
    return load_npy(data)


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
        # field name -> its basic decoder (None: stays bytes), when no handler comes first;
        # shards repeat the same few field names, so each is looked up once
        self._plans: dict[str, Callable[[bytes], Any] | None] = {}
        self._fields: dict[str, Callable[[bytes], Any] | None] = {}  # the same, for __call__

    def _plan(self, key: str) -> Callable[[bytes], Any] | None:
        """The basic decoder of field ``key`` (None: it stays bytes), looked up once a name."""
        if key in self._plans:
            return self._plans[key]
        ext = key.rsplit(".", 1)[-1]
        if ext in PICKLE_EXTENSIONS and ext not in self.basic and ext not in self._warned:
            self._warned.add(ext)
            warnings.warn(f"field {key!r} left as bytes: pickle decoding is off", stacklevel=4)
        plan = self._plans[key] = self.basic.get(ext)
        return plan

    def decode1(self, key: str, data: bytes) -> Any:
        if key.endswith(".gz"):
            return self.decode1(key[:-3], gzip.decompress(data))
        dotted = "." + key
        for handler in self.handlers:
            result = handler(dotted, data)
            if result is not None:
                return result
        plan = self._plan(key)
        return data if plan is None else plan(data)

    def _field(self, key: str) -> Callable[[bytes], Any] | None:
        """How field ``key`` is decoded (None: it is kept as it is), looked up once a name."""
        if key[:2] == "__" or (self.only is not None and key not in self.only):
            plan = None
        elif self.handlers or key.endswith(".gz"):
            plan = functools.partial(self.decode1, key)
        else:
            plan = self._plan(key)
        self._fields[key] = plan
        return plan

    def __call__(self, sample: dict) -> dict:
        result = {}
        fields = self._fields
        for key, value in sample.items():
            plan = fields[key] if key in fields else self._field(key)
            if plan is None or not isinstance(value, bytes):
                result[key] = value
                continue
            try:
                result[key] = plan(value)
            except Exception as e:
                raise DecodeError(
                    f"cannot decode field {key!r} of sample {sample.get('__key__')!r} "
                    f"in {sample.get('__url__')}: {e}",
                    sample.get("__url__"),
                    sample.get("__key__"),
                    key,
                ) from e
        return result


def partial_torch_loads_unsafe(data: bytes) -> Any:
    return _torch_loads(data, weights_only=False)


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
