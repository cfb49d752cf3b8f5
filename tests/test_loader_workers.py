"""Batches through DataLoader workers: the same samples, values, dtypes and shapes as without
workers, handed to the main process by value when small (driftloader.pipeline.hand_over)."""

from __future__ import annotations

import pickle
import sys
from collections import namedtuple
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import driftloader as dl
from driftloader import pipeline as P


def _batches(urls, workers, size=16, **kw):
    ds = dl.DriftDataset(urls, shuffle=False, **kw).decode().to_tuple("__key__", "x.npy", "cls")
    return list(DataLoader(ds.batched(size), batch_size=None, num_workers=workers))


def _by_key(batches):
    return {
        key: (x.dtype, tuple(x.shape), x.numpy().tobytes(), int(c))
        for keys, xs, cls in batches
        for key, x, c in zip(keys, xs, cls)
    }


def test_two_workers_give_the_same_batches_as_none(local_shards):
    single = _by_key(_batches(local_shards, 0))
    assert len(single) == 100
    assert _by_key(_batches(local_shards, 2)) == single
    assert _by_key(_batches(local_shards, 2, worker_handoff=False)) == single
    for keys, x, cls in _batches(local_shards, 2):
        assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (len(keys), 64)
        assert type(cls) is torch.Tensor and cls.dtype == torch.int64 and cls.shape == (len(keys),)
        assert isinstance(keys, list) and all(isinstance(k, str) for k in keys)


def test_small_worker_batches_cross_by_value_large_ones_in_shared_memory(local_shards, monkeypatch):
    for _, x, cls in _batches(local_shards, 2):
        assert not x.is_shared() and not cls.is_shared()  # no segment, no descriptor
        x += 1  # plain, writable tensors
    for _, x, cls in _batches(local_shards, 2, worker_handoff=False):
        assert x.is_shared() and cls.is_shared()  # torch's own way
    monkeypatch.setattr(P, "BY_VALUE_LIMIT", 16 * 64 * 4)  # x of a full batch fits, x + cls not
    for keys, x, cls in _batches(local_shards, 2):
        assert x.is_shared() == cls.is_shared() == (len(keys) == 16)


def test_main_process_batches_stay_webdatasets(local_shards):
    ds = dl.DriftDataset(local_shards, shuffle=False).decode().to_tuple("x.npy", "cls")
    x, cls = next(iter(ds.batched(16)))
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (16, 64)
    assert isinstance(cls, np.ndarray) and cls.dtype == np.int64


class _Wrapper(IterableDataset):
    def __init__(self, inner):
        self.inner = inner

    def __iter__(self):
        for x, cls in self.inner:
            yield type(x).__name__, type(cls).__name__


def _kinds(batch):
    return [isinstance(x, torch.Tensor) for x, _ in batch]


def test_only_batches_the_loader_collates_are_handed_over(local_shards):
    batched = dl.DriftDataset(local_shards).decode().to_tuple("x.npy", "cls").batched(8)
    got = {tuple(t) for t in DataLoader(_Wrapper(batched), batch_size=None, num_workers=2)}
    assert got == {("ndarray", "ndarray")}  # a wrapping dataset still sees numpy
    # single samples, which the DataLoader batches in the worker: left to its collate_fn
    samples = dl.DriftDataset(local_shards).decode().to_tuple("x.npy", "cls")
    loader = DataLoader(samples, batch_size=4, num_workers=2, collate_fn=_kinds)
    assert {k for kinds in loader for k in kinds} == {False}
    # a custom collate_fn sees tensors, unless worker_handoff=False
    loader = DataLoader(batched, batch_size=None, num_workers=2, collate_fn=lambda b: _kinds([b]))
    assert {k for kinds in loader for k in kinds} == {True}
    batched.worker_handoff = False
    assert {k for kinds in loader for k in kinds} == {False}
    custom = batched.compose(lambda data, ctx: data)  # may unbatch: left alone
    custom.worker_handoff = True
    loader = DataLoader(custom, batch_size=None, num_workers=2, collate_fn=lambda b: _kinds([b]))
    assert {k for kinds in loader for k in kinds} == {False}


def test_batches_of_batches_still_collate(local_shards):
    ds = dl.DriftDataset(local_shards, shuffle=False).decode().to_tuple("x.npy", "cls")
    loader = DataLoader(ds.batched(5, partial=False), batch_size=2, num_workers=2)
    shapes = {(tuple(x.shape), tuple(c.shape), type(x)) for x, c in loader}
    assert shapes == {((2, 5, 64), (2, 5), torch.Tensor)}


def test_as_tensors_keeps_values_types_and_structure():
    Pair = namedtuple("Pair", "a b")
    item = {
        "f": np.arange(12, dtype=np.float16).reshape(3, 4)[:, ::2],  # not contiguous
        "r": np.frombuffer(b"\x01\x02\x03", np.uint8),  # read-only
        "b": np.array([True, False]),
        "c": np.array([1 + 2j], dtype=np.complex64),
        "empty": np.zeros((0, 3), np.int32),
        "keys": ["a", "b"],
        "s": np.array(["x", "y"]),
        "pair": Pair(np.ones(3), 7),
        "tup": (np.int64(3), torch.zeros(2)),
    }
    out = P.as_tensors(item)
    assert type(out) is dict and list(out) == list(item)
    for key in ("f", "r", "b", "c", "empty"):
        want = torch.as_tensor(np.array(item[key]))
        assert isinstance(out[key], P.PickledTensor) and out[key].dtype == want.dtype
        assert torch.equal(out[key], want)
    assert out["keys"] == ["a", "b"] and out["s"] is item["s"]  # strings left as they are
    assert type(out["pair"]) is Pair and out["pair"].b == 7
    assert torch.equal(out["pair"].a, torch.ones(3, dtype=torch.float64))
    assert out["tup"][0] is item["tup"][0] and out["tup"][1] is item["tup"][1]
    assert type(out["f"] + 1) is torch.Tensor  # operations give plain tensors
    assert P.as_tensors(("no", "arrays")) == ("no", "arrays")


def test_pickled_tensor_crosses_by_value():
    x = P.as_tensors(np.arange(1000, dtype=np.float32))
    data = ForkingPickler.dumps(x)
    assert len(data) > 4000  # the values themselves, not a shared-memory handle
    back = pickle.loads(data)
    assert type(back) is torch.Tensor and torch.equal(back, torch.arange(1000.0))
    big = np.zeros(P.BY_VALUE_LIMIT // 8 + 1)
    assert type(P.as_tensors(big)) is torch.Tensor  # shared by torch as usual


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint16, np.bool_])
def test_as_tensors_round_trips_through_a_worker(dtype):
    class Batches(IterableDataset):
        def __iter__(self):
            yield P.as_tensors((np.arange(10).astype(dtype), np.ones((2, 3), np.float64)))

    ((a, b),) = list(DataLoader(Batches(), batch_size=None, num_workers=1))
    assert type(a) is torch.Tensor and torch.equal(a, torch.as_tensor(np.arange(10).astype(dtype)))
    assert torch.equal(b, torch.ones(2, 3, dtype=torch.float64))


def _with_switch_interval(batch):
    return batch, sys.getswitchinterval()


def test_workers_produce_batches_under_a_short_switch_interval(local_shards):
    ds = dl.DriftDataset(local_shards).decode().to_tuple("x.npy", "cls").batched(8)
    ds = ds.map(_with_switch_interval)
    default = sys.getswitchinterval()
    assert default > P.WORKER_SWITCH_INTERVAL  # Python's 5 ms
    assert {s for _, s in DataLoader(ds, batch_size=None, num_workers=0)} == {default}
    got = {s for _, s in DataLoader(ds, batch_size=None, num_workers=2)}
    assert got == {P.WORKER_SWITCH_INTERVAL}

    def items():
        yield sys.getswitchinterval()

    assert list(P.hand_over(items())) == [P.WORKER_SWITCH_INTERVAL]
    assert sys.getswitchinterval() == default  # restored
