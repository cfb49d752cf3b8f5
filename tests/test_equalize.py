"""``equalize=True`` with skipped and quarantined shards: equal, non-zero counts per rank x worker,
no sample twice, and a warning when fewer shards are read than there are iterators. Ranks are
simulated with RANK / WORLD_SIZE, workers with a real DataLoader."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, get_worker_info

import driftloader as dl
from driftloader.distributed import Placement

from .conftest import write_gated_corpus

CLEAN_SIZES = [40, 30, 35, 45, 25, 50]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_gated_corpus(tmp_path_factory.mktemp("equalize"), CLEAN_SIZES, 6)


def _skipping(corpus: dict, urls: list[str], **kwargs) -> dl.DriftDataset:
    return dl.DriftDataset(
        urls, store=corpus["store"], reference="ref", policy="skip", equalize=True, **kwargs
    )


def _as_rank(make, rank: int, world: int, monkeypatch, epoch: int) -> dl.DriftDataset:
    """A fresh dataset made as simulated rank ``rank`` of ``world``, at ``epoch``."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    ds = make()
    ds.set_epoch(epoch)
    return ds


def _by_rank(make, world: int, monkeypatch: pytest.MonkeyPatch, epoch: int = 0) -> list[list]:
    """The keys each of ``world`` simulated ranks yields (a fresh dataset per rank)."""
    return [
        [s["__key__"] for s in _as_rank(make, rank, world, monkeypatch, epoch)]
        for rank in range(world)
    ]


def _tagged(sample: dict) -> tuple[int, str]:
    return get_worker_info().id, sample["__key__"]


def _by_rank_and_worker(make, world: int, workers: int, monkeypatch, epoch: int) -> list[list]:
    """The keys each rank x DataLoader worker yields, rank-major."""
    out = []
    for rank in range(world):
        ds = _as_rank(make, rank, world, monkeypatch, epoch)
        loader = DataLoader(ds.map(_tagged), batch_size=None, num_workers=workers)
        mine: list[list] = [[] for _ in range(workers)]
        for worker, key in loader:
            mine[int(worker)].append(key)
        out.extend(mine)
    return out


def _name(row: dict) -> str:
    return Path(row["url"]).name


def _no_repeats(slices: list[list]) -> list[str]:
    keys = [k for part in slices for k in part]
    assert len(keys) == len(set(keys)), [k for k, c in Counter(keys).items() if c > 1][:5]
    return keys


def test_a_quarantined_shard_is_planned_excluded_and_ranks_stay_equal(tmp_path, monkeypatch):
    from driftloader.check import check_shards
    from driftloader.versions import quarantine

    corpus = write_gated_corpus(
        tmp_path, CLEAN_SIZES, 6
    )  # its own store: the exclusion list stays in this test
    store, clean, bad = corpus["store"], corpus["clean"], corpus["drifted"][0]
    urls = [clean[0], clean[1], bad, clean[2]]  # unshuffled: bad falls to rank 0 of 2
    check_shards(urls, store, "ref")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # local shards cannot be tagged
        assert [Path(s["url"]).name for s in quarantine(store, "ref").shards] == ["drift-0.tar"]

    def make():  # monitor: only the exclusion list keeps the shard out
        return dl.DriftDataset(
            urls, store=store, reference="ref", policy="monitor", shuffle=False, equalize=True
        )

    plan = {_name(r): (r["action"], r["n"]) for r in make().plan()}
    assert plan == {
        "clean-0.tar": ("read", 40),
        "clean-1.tar": ("read", 30),
        "drift-0.tar": ("excluded", 60),
        "clean-2.tar": ("read", 35),
    }
    keys = _by_rank(make, 2, monkeypatch)
    assert [len(k) for k in keys] == [30, 30]  # clean-0 + clean-2 vs clean-1: the smaller
    assert not any(k.startswith("sample03") for k in _no_repeats(keys))  # drift-0: 030000..
    monkeypatch.setenv("RANK", "0")
    ds = make()
    assert len(list(ds)) == 30
    decisions = {_name(r): r["action"] for r in ds.drift_report(include_store=False)}
    assert decisions["drift-0.tar"] == "excluded"  # recorded: unread shards come first


def test_skipped_shards_do_not_starve_a_rank(corpus, monkeypatch):
    clean, drifted = corpus["clean"], corpus["drifted"]
    urls = [clean[0], drifted[0], clean[1], drifted[1], drifted[2]]  # both clean on rank 0 of 2

    def make():
        return _skipping(corpus, urls, shuffle=False)

    assert [r["action"] for r in make().plan()] == ["read", "skip", "read", "skip", "skip"]
    keys = _by_rank(make, 2, monkeypatch)
    assert [len(k) for k in keys] == [30, 30]  # was [0, 0]: rank 1 had only skipped shards
    _no_repeats(keys)


def test_ranks_and_workers_get_equal_nonzero_counts_every_epoch(corpus, monkeypatch):
    clean, drifted = corpus["clean"][:4], corpus["drifted"]
    urls = [*drifted, *clean]  # 4 read of 10, for 2 ranks x 2 workers

    def make():
        return _skipping(corpus, urls, seed=3)

    for epoch in range(4):
        slices = _by_rank_and_worker(make, 2, 2, monkeypatch, epoch)
        counts = [len(part) for part in slices]
        assert len(set(counts)) == 1 and counts[0] >= min(CLEAN_SIZES[:4]), (epoch, counts)
        keys = _no_repeats(slices)
        assert all(int(k[6:]) < 30000 for k in keys)  # no drifted sample
        # each slice reads exactly one clean shard: a prefix of it
        assert len({k[:9] for k in keys}) == 4


def test_every_shard_goes_to_exactly_one_slice_in_epoch_order(corpus):
    urls = [*corpus["drifted"], *corpus["clean"]]
    ds = _skipping(corpus, urls, seed=7)
    read = {(s.url, s.version) for s, r in zip(ds.shards, ds.plan()) if r["action"] == "read"}
    for epoch in range(3):
        order = ds._ordered(epoch)
        assert order == _skipping(corpus, urls, seed=7)._ordered(epoch)  # same on every rank
        slices = [ds.shards_for(Placement(r, 2, w, 2), epoch) for r in range(2) for w in range(2)]
        assert sorted(s.url for part in slices for s in part) == sorted(s.url for s in ds.shards)
        for part in slices:  # unread shards first, each kind in epoch order
            unread = [s for s in order if s in part and (s.url, s.version) not in read]
            assert part == unread + [s for s in order if s in part and (s.url, s.version) in read]
        n_read = [sum((s.url, s.version) in read for s in part) for part in slices]
        assert max(n_read) - min(n_read) <= 1


def test_fewer_read_shards_than_iterators_warns(corpus, monkeypatch):
    clean, drifted = corpus["clean"], corpus["drifted"]
    urls = [clean[0], drifted[0], clean[1], drifted[1], drifted[2]]

    def make():  # the iterators that read nothing are expected: warned, not refused
        return _skipping(corpus, urls, empty_check=False)

    with pytest.warns(RuntimeWarning, match=r"only 2 of 5 shards are read.*4 iterators"):
        keys = _by_rank(make, 4, monkeypatch)
    assert keys == [[], [], [], []]


def test_every_shard_skipped_warns(corpus, monkeypatch):
    def make():
        return _skipping(corpus, corpus["drifted"][:3], empty_check=False)

    with pytest.warns(RuntimeWarning, match="all 3 shards are skipped or excluded"):
        assert _by_rank(make, 1, monkeypatch) == [[]]


@pytest.mark.parametrize("rank", [0, 1])
def test_equalize_with_skipped_shards_resumes(corpus, monkeypatch, rank):
    clean, drifted = corpus["clean"], corpus["drifted"]
    urls = [clean[0], drifted[0], clean[1], drifted[1], drifted[2], clean[2]]
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")

    def make():
        return _skipping(corpus, urls, seed=1).shuffle(10).map(lambda s: s["__key__"])

    whole = make()
    epoch0, epoch1 = list(whole), list(whole)
    assert epoch0 and epoch1
    for k in (0, 17, len(epoch0)):
        ds = make()
        it = iter(ds)
        head = [next(it) for _ in range(k)]
        state = json.loads(json.dumps(ds.state_dict()))
        it.close()
        resumed = make()
        resumed.load_state_dict(state)
        assert head + list(resumed) == epoch0
        assert list(resumed) == epoch1
