"""Drop-in: ``wds.WebDataset`` and ``DriftDataset`` side by side on the same shards (plain and
gzip-compressed tar, written here with webdataset's TarWriter): same samples, same keys, same
errors, one scenario per cause of issue #18 (and the webdataset methods of issue #14)."""

from __future__ import annotations

import json
import os
import shlex
import warnings

import pytest
import webdataset as wds
from torch.utils.data import DataLoader

import driftloader as dl

from .save_load import norm, run_test_save_load_state

BOTH = [wds.WebDataset, dl.DriftDataset]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("dropin")
    for name, n in (("a.tar", 6), ("b.tar.gz", 5), ("c.tgz", 4)):
        with wds.TarWriter(str(folder / name)) as writer:
            for i in range(n):
                writer.write(
                    {
                        "__key__": f"{name[0]}{i:03d}",
                        "cls": str(i).encode(),
                        "json": json.dumps({"i": i, "shard": name}).encode(),
                    }
                )
    with wds.TarWriter(str(folder / "bad.tar")) as writer:
        writer.write({"__key__": "x000", "json": b"{not json"})
    return str(folder)


def urls(shard_dir: str, *names: str) -> list[str]:
    return [os.path.join(shard_dir, name) for name in names]


ALL = ("a.tar", "b.tar.gz", "c.tgz")


def both(make) -> tuple[list, list]:
    """What ``make(cls)`` yields for webdataset and for driftloader, comparable."""
    return tuple([norm(x) for x in make(cls)] for cls in BOTH)


def test_compressed_and_plain_shards_give_the_same_samples(shard_dir):
    ours, theirs = both(lambda cls: cls(urls(shard_dir, *ALL), shardshuffle=False))
    assert ours == theirs and len(ours) == 15
    gz = urls(shard_dir, "b.tar.gz")[0]
    sample = next(iter(dl.DriftDataset(gz, shardshuffle=False)))
    assert sample["__url__"] == gz and sample["__local_path__"] == gz


def test_decoded_samples_match(shard_dir):
    ours, theirs = both(
        lambda cls: cls(urls(shard_dir, *ALL), shardshuffle=False).decode().to_tuple("cls", "json")
    )
    assert ours == theirs


def test_pipe_urls(shard_dir):
    pipe = "pipe:cat " + shlex.quote(urls(shard_dir, "b.tar.gz")[0])
    ours, theirs = both(lambda cls: cls(pipe, shardshuffle=False).map(lambda s: s["__key__"]))
    assert ours == theirs == [f"b{i:03d}" for i in range(5)]
    for cls in BOTH:
        with pytest.raises(Exception):  # noqa: B017 (webdataset raises tarfile.ReadError)
            list(cls("pipe:false", shardshuffle=False))
    with pytest.raises(dl.ShardReadError, match="pipe:false.*status 1"):
        list(dl.DriftDataset("pipe:false", shardshuffle=False))


@pytest.mark.parametrize("nepochs", [1, 3])
def test_repeat(shard_dir, nepochs):
    ours, theirs = both(
        lambda cls: (
            cls(urls(shard_dir, *ALL), shardshuffle=False)
            .map(lambda s: s["__key__"])
            .repeat(nepochs)
        )
    )
    assert len(ours) == len(theirs) == 15 * nepochs
    assert sorted(ours) == sorted(theirs)


def test_repeat_with_nbatches(shard_dir):
    ours, theirs = both(
        lambda cls: (
            cls(urls(shard_dir, *ALL), shardshuffle=False)
            .map(lambda s: s["__key__"])
            .batched(4)
            .repeat(nepochs=2, nbatches=5)
        )
    )
    assert len(ours) == len(theirs) == 5
    forever = dl.DriftDataset(urls(shard_dir, "a.tar")).repeat()  # nepochs None: forever
    it = iter(forever)
    assert len([next(it) for _ in range(20)]) == 20
    it.close()


def test_repeat_resumes(shard_dir):
    def make() -> dl.DriftDataset:
        return dl.DriftDataset(urls(shard_dir, *ALL), seed=3).shuffle(5).repeat(2)

    run_test_save_load_state(make, 20)


def test_slice(shard_dir):
    for args in ((4,), (2, 11, 3), (5, None)):
        ours, theirs = both(
            lambda cls, args=args: (
                cls(urls(shard_dir, *ALL), shardshuffle=False)
                .map(lambda s: s["__key__"])
                .slice(*args)
            )
        )
        assert ours == theirs and ours
    with pytest.raises(ValueError, match="slice"):
        dl.DriftDataset(urls(shard_dir, "a.tar")).slice("x")


def test_rsample(shard_dir):
    for p in (0.0, 1.0):
        ours, theirs = both(
            lambda cls, p=p: (
                cls(urls(shard_dir, *ALL), shardshuffle=False)
                .map(lambda s: s["__key__"])
                .rsample(p)
            )
        )
        assert ours == theirs
    everything = [s["__key__"] for s in dl.DriftDataset(urls(shard_dir, *ALL), shardshuffle=False)]
    half = dl.DriftDataset(urls(shard_dir, *ALL), shardshuffle=False, seed=1).rsample(0.5)
    half.set_epoch(0)
    kept = [s["__key__"] for s in half]
    assert 0 < len(kept) < 15 and kept == [k for k in everything if k in kept]
    assert kept == [s["__key__"] for s in half]  # seeded by (seed, epoch): the same on a rerun
    with pytest.raises(ValueError, match="p=1.5"):
        half.rsample(1.5)


def test_map_tuple_log_keys_xdecode_listed(shard_dir, tmp_path):
    def make(cls, log):
        return (
            cls(urls(shard_dir, *ALL), shardshuffle=False)
            .log_keys(str(log))
            .xdecode(("json", json.load), must_decode=False)
            .to_tuple("__key__", "json")
            .map_tuple(str.upper, lambda d: d["i"])
            .listed(4)
        )

    logs = [tmp_path / "wds.log", tmp_path / "ours.log"]
    ours, theirs = (norm(list(make(cls, log))) for cls, log in zip(BOTH, logs))
    assert ours == theirs and len(ours) == 4
    lines = [log.read_text().splitlines() for log in logs]
    assert lines[0] == lines[1] and len(lines[0]) == 15 and lines[0][0].endswith("\ta000")


def test_context_manager_closes_open_iterators(shard_dir):
    for cls in BOTH:
        with cls(urls(shard_dir, *ALL), shardshuffle=False) as ds:
            assert len(list(ds)) == 15
    with dl.DriftDataset(urls(shard_dir, *ALL)) as ds:
        it = iter(ds)
        next(it)
    with pytest.raises(StopIteration):  # closed on exit
        next(it)


def test_resampled(shard_dir):
    def keys(cls, seed=0):
        ds = cls(urls(shard_dir, *ALL), resampled=True, shardshuffle=False, seed=seed)
        return [s["__key__"] for s in ds.with_epoch(40)]

    ours, theirs = keys(dl.DriftDataset), keys(wds.WebDataset)
    assert len(ours) == len(theirs) == 40
    everything = {s["__key__"] for s in dl.DriftDataset(urls(shard_dir, *ALL))}
    assert set(ours) <= everything and len(set(ours)) < 40  # drawn with replacement
    assert keys(dl.DriftDataset) == ours and keys(dl.DriftDataset, seed=1) != ours

    def make() -> dl.DriftDataset:
        return dl.DriftDataset(urls(shard_dir, *ALL), resampled=True).shuffle(4).with_epoch(30)

    run_test_save_load_state(make, 13)


def test_decode_errors_are_webdatasets_decoding_error(shard_dir):
    for cls in BOTH:
        with pytest.raises(wds.DecodingError):
            list(cls(urls(shard_dir, "bad.tar"), shardshuffle=False).decode())
    with pytest.raises(dl.DriftloaderError, match="json.*x000"):
        list(dl.DriftDataset(urls(shard_dir, "bad.tar")).decode())


def test_empty_check_as_webdataset(shard_dir):
    """One shard, two DataLoader workers: one worker has nothing, and both refuse it."""
    for cls in BOTH:
        ds = cls(urls(shard_dir, "a.tar"), shardshuffle=False)
        with pytest.raises(ValueError):
            list(DataLoader(ds, batch_size=None, num_workers=2))
        ds = cls(urls(shard_dir, "a.tar"), shardshuffle=False, empty_check=False)
        assert len(list(DataLoader(ds, batch_size=None, num_workers=2))) == 6


def test_methods_that_cannot_stream_name_the_alternative(shard_dir):
    ds = dl.DriftDataset(urls(shard_dir, "a.tar"))
    with pytest.raises(NotImplementedError, match="local"):
        ds.mcached()
    with pytest.raises(NotImplementedError, match="local disk"):
        ds.lmdb_cached("x")


# ------------------------------------------------------------------ issue #14: what is silent


def test_uneven_ranks_under_split_by_node_warn(shard_dir):
    def iterate(ds: dl.DriftDataset, rank: int) -> list:
        ds._rank_world = (rank, 2)  # as carried to a spawned worker of rank 0 of 2
        return list(ds)

    three = urls(shard_dir, *ALL)
    with pytest.warns(UserWarning, match=r"ranks get \[2, 1\] shards.*equalize=True"):
        iterate(dl.DriftDataset(three, shardshuffle=False, nodesplitter=wds.split_by_node), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two = urls(shard_dir, "a.tar", "b.tar.gz")
        assert len(iterate(dl.DriftDataset(two, shardshuffle=False), 1)) == 5
        assert len(iterate(dl.DriftDataset(three).with_epoch(4), 1)) == 4


@pytest.fixture(scope="module")
def quarantined(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from driftloader.check import check_shards
    from driftloader.versions import quarantine

    from .conftest import write_gated_corpus

    corpus = write_gated_corpus(tmp_path_factory.mktemp("quarantine"), [40, 30], 1)
    urls = [*corpus["clean"], *corpus["drifted"]]
    check_shards(urls, corpus["store"], "ref")
    assert len(quarantine(corpus["store"], "ref").shards) == 1
    return {**corpus, "urls": urls}


@pytest.mark.parametrize("policy", ["monitor", "reweight"])
def test_quarantined_shards_warn_and_are_counted(quarantined, policy):
    with pytest.warns(UserWarning, match=r"1 of 3 shards are quarantined for reference 'ref'"):
        ds = dl.DriftDataset(
            quarantined["urls"], store=quarantined["store"], reference="ref", policy=policy
        )
    assert len(list(ds)) == 70  # the clean shards' samples, not an empty iterator
    assert ds.stats.excluded_shards == quarantined["drifted"]
    only = dl.DriftDataset(
        quarantined["drifted"], store=quarantined["store"], reference="ref", policy=policy
    )
    with pytest.raises(ValueError, match="read no samples.*excluded"):
        list(only)  # everything quarantined: said, not silently empty
