"""DriftDataset.state_dict / load_state_dict: exact resumption mid-epoch, across epochs, restarts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import driftloader as dl
from driftloader.errors import VersionMismatch

from .conftest import write_gated_corpus, write_shard


def _norm(x: Any) -> Any:
    """A comparable form of a sample, tuple or collated batch."""
    if isinstance(x, dict):
        return tuple(sorted((k, _norm(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_norm(v) for v in x)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return ("array", _norm(x.tolist()))
    return x


def _decisions(ds: dl.DriftDataset) -> list[tuple]:
    return [(r["url"], r["action"], r["n"]) for r in ds.drift_report()]


def check_resume(make_dataset: Callable[[], dl.DriftDataset], k: int) -> None:
    """Stop after ``k`` items, save, resume: in the same object, in a fresh one, and again from
    a state saved just after resuming.

    Checks that the resumed epoch yields exactly the items not yet yielded, in order; that the
    next epoch equals an uninterrupted run's; that drift decisions carry over; and that the state
    survives a JSON round trip.
    """
    whole = make_dataset()
    epoch0 = [_norm(x) for x in whole]
    decisions0 = _decisions(whole)
    epoch1 = [_norm(x) for x in whole]
    assert 0 <= k <= len(epoch0)

    ds = make_dataset()
    it = iter(ds)
    head = [_norm(next(it)) for _ in range(k)]
    state = json.loads(json.dumps(ds.state_dict()))
    it.close()
    assert head == epoch0[:k] and state["yielded"] == k

    for resumed in (ds, make_dataset()):
        resumed.load_state_dict(state)
        assert [_norm(x) for x in resumed] == epoch0[k:]
        assert _decisions(resumed) == decisions0
        assert [_norm(x) for x in resumed] == epoch1

    if k < len(epoch0):  # saved again right after resuming: a resumed state resumes too
        once = make_dataset()
        once.load_state_dict(state)
        it = iter(once)
        assert _norm(next(it)) == epoch0[k]
        again = make_dataset()
        again.load_state_dict(json.loads(json.dumps(once.state_dict())))
        it.close()
        assert [_norm(x) for x in again] == epoch0[k + 1 :]
        assert _decisions(again) == decisions0


@pytest.fixture
def shards(tmp_path: Path) -> list[str]:
    """Five shards of uneven sizes."""
    urls = []
    for s, n in enumerate([9, 14, 7, 12, 10]):
        write_shard(tmp_path / f"r-{s}.tar", n, seed=s, start=s * 100)
        urls.append(str(tmp_path / f"r-{s}.tar"))
    return urls


@pytest.mark.parametrize("k", [0, 1, 13, 30, 51, 52])
def test_plain(shards, k):
    check_resume(lambda: dl.DriftDataset(shards).map(lambda s: s["__key__"]), k)


@pytest.mark.parametrize("k", [0, 5, 20, 40, 49, 52])
def test_with_sample_shuffle(shards, k):
    check_resume(lambda: dl.DriftDataset(shards).shuffle(16, initial=4).decode(), k)


@pytest.mark.parametrize("k", [0, 2, 6, 10, 11])
def test_batched_after_shuffle(shards, k):
    def make():
        return dl.DriftDataset(shards).shuffle(10).decode().to_tuple("x.npy", "cls").batched(5)

    check_resume(make, k)


@pytest.mark.parametrize("k", [3, 21])
def test_select_falls_back_to_a_full_replay(shards, k):
    def make():
        return dl.DriftDataset(shards).decode().select(lambda s: s["cls"] % 2 == 0).shuffle(8)

    check_resume(make, k)


@pytest.mark.parametrize("k", [7, 45, 80])
def test_with_epoch_repeats(shards, k):
    check_resume(lambda: dl.DriftDataset(shards[:2]).shuffle(5).with_epoch(80), k)


@pytest.fixture
def gated(tmp_path: Path) -> dict:
    """A reference, two clean shards (40 and 30 samples) around a drifted one (60), profiled."""
    corpus = write_gated_corpus(tmp_path, [40, 30], 1)
    a, b = corpus["clean"]
    return {"store": corpus["store"], "train": [a, corpus["drifted"][0], b]}


@pytest.mark.parametrize("k", [0, 10, 45, 69, 70])
def test_skip_policy_keeps_decisions(gated, k):
    def make():
        ds = dl.DriftDataset(gated["train"], store=gated["store"], reference="ref", policy="skip")
        return ds.shuffle(20).map(lambda s: s["__key__"])

    assert [r["action"] for r in make().plan()] == ["read", "skip", "read"]
    check_resume(make, k)


@pytest.mark.parametrize("k", [5, 50])
def test_reweight_policy_resumes_with_the_same_weights(gated, k):
    def make():
        ds = dl.DriftDataset(
            gated["train"], store=gated["store"], reference="ref", policy="reweight"
        )
        return ds.shuffle(30).to_tuple("__key__", "__weight__")

    check_resume(make, k)


@pytest.mark.parametrize("k", [5, 50, 119])
def test_resample_policy_resumes_with_the_same_draws(gated, k):
    def make():
        ds = dl.DriftDataset(
            gated["train"], store=gated["store"], reference="ref", policy="resample"
        )
        return ds.shuffle(30).map(lambda s: s["__key__"])

    keys = list(make())
    assert len(keys) == 130 and len(set(keys)) < 130  # the drifted shard was resampled
    check_resume(make, k)


def test_whole_shards_already_yielded_are_not_read(shards):
    full = dl.DriftDataset(shards, shuffle=False)
    n = len(list(full))
    ds = dl.DriftDataset(shards, shuffle=False)
    it = iter(ds)
    for _ in range(40):  # the first three shards (30 samples) and part of the fourth
        next(it)
    state = ds.state_dict()
    fresh = dl.DriftDataset(shards, shuffle=False)
    fresh.load_state_dict(state)
    assert len(list(fresh)) == n - 40
    assert fresh.stats.shards == 2 and fresh.stats.bytes < full.stats.bytes / 2


def test_changed_data_or_seed_is_refused(gated, tmp_path):
    def make(seed=0):
        return dl.DriftDataset(gated["train"], store=gated["store"], reference="ref", seed=seed)

    ds = make()
    next(iter(ds))
    state = ds.state_dict()
    with pytest.raises(ValueError, match="seed=0"):
        make(seed=1).load_state_dict(state)
    write_shard(gated["train"][0], 41, seed=99)
    os.utime(gated["train"][0], (1, 1))
    with pytest.raises(VersionMismatch, match="clean-0.tar"):
        make().load_state_dict(state)
    with pytest.raises(ValueError, match="version 1"):
        make().load_state_dict({"version": 7})
    with pytest.raises(ValueError, match="malformed"):
        make().load_state_dict({"version": 1})


def test_resume_on_another_worker_layout_is_refused(shards):
    ds = dl.DriftDataset(shards)
    next(iter(ds))
    state = ds.state_dict()
    state["progress"]["where"] = [0, 1, 0, 2]
    fresh = dl.DriftDataset(shards)
    fresh.load_state_dict(state)
    with pytest.raises(ValueError, match="worker 0 of 2.*StatefulDataLoader"):
        list(fresh)


def test_a_finished_epoch_resumes_at_the_next(shards):
    ds = dl.DriftDataset(shards)
    first, second = list(ds), list(ds)
    again = dl.DriftDataset(shards)
    list(again)
    state = again.state_dict()
    fresh = dl.DriftDataset(shards)
    fresh.load_state_dict(state)
    assert [s["__key__"] for s in fresh] == [s["__key__"] for s in second] != first


def test_stateful_dataloader_with_two_workers(shards):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def make():
        ds = dl.DriftDataset(shards).shuffle(8).map(lambda s: s["__key__"])
        return sdl.StatefulDataLoader(ds, batch_size=3, num_workers=2)

    whole = [list(b) for b in make()]
    loader = make()
    it = iter(loader)
    head = [list(next(it)) for _ in range(7)]
    state = loader.state_dict()
    del it
    resumed = make()
    resumed.load_state_dict(state)
    rest = [list(b) for b in resumed]
    assert head + rest == whole
    assert sorted(k for b in whole for k in b) == sorted(
        s["__key__"] for s in dl.DriftDataset(shards)
    )


@pytest.mark.parametrize("k", [0, 4, 26, 51, 52])
def test_rename_is_one_to_one(shards, k):
    check_resume(lambda: dl.DriftDataset(shards).shuffle(8).rename(label="cls", keep=False), k)


@pytest.mark.parametrize("k", [0, 3, 17, 50, 52])
def test_unbatched_falls_back_to_a_full_replay(shards, k):
    def make():
        ds = dl.DriftDataset(shards).shuffle(10).decode().to_tuple("x.npy", "cls")
        return ds.batched(5).unbatched().shuffle(4)

    check_resume(make, k)


def test_a_with_epoch_repeat_is_not_the_next_epoch(shards):
    def epoch(e: int) -> list:
        ds = dl.DriftDataset(shards[:2]).shuffle(5).map(lambda s: s["__key__"]).with_epoch(46)
        ds.set_epoch(e)
        return list(ds)

    first, second = epoch(0), epoch(1)
    assert first[23:] != second[:23]  # the repeat of the 23 samples is shuffled anew ...
    assert sorted(first[23:]) == sorted(first[:23])  # ... over the same samples
