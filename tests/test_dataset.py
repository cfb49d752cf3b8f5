"""DriftDataset as a drop-in for webdataset.WebDataset: pipelines, workers, epochs, errors."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

import driftloader as dl
from driftloader.errors import NoShardsError

from .conftest import write_shard


def _image_shards(tmp_path, n_shards=2, n=6):
    urls = []
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        path = tmp_path / f"img-{s:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8)).save(buf, "PNG")
                sink.write(
                    {"__key__": f"s{s}i{i}", "png": buf.getvalue(), "cls": str(i % 3).encode()}
                )
        urls.append(str(path))
    return urls


def test_fluent_snippet_matches_webdataset(tmp_path):
    urls = _image_shards(tmp_path)
    theirs = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("png", "cls"))
    ours = list(dl.DriftDataset(urls, shuffle=False).decode("rgb8").to_tuple("png", "cls"))
    assert len(ours) == len(theirs) == 12
    for (a, b), (c, d) in zip(ours, theirs):
        assert np.array_equal(a, c) and a.dtype == c.dtype and b == d


def test_pil_decode_and_shuffle_pipeline_runs_unchanged(tmp_path):
    urls = _image_shards(tmp_path)
    ds = dl.DriftDataset(urls).shuffle(1000).decode("pil").to_tuple("png", "cls")
    items = list(ds)
    assert len(items) == 12 and all(isinstance(img, Image.Image) for img, _ in items)
    assert Counter(c for _, c in items) == Counter({0: 4, 1: 4, 2: 4})


def test_default_decode_equals_webdataset(local_shards):
    theirs = list(wds.WebDataset(local_shards, shardshuffle=False).decode())
    ours = list(dl.DriftDataset(local_shards, shuffle=False).decode())
    assert len(ours) == len(theirs) == 100
    for a, b in zip(ours, theirs):
        assert a["__key__"] == b["__key__"] and a["cls"] == b["cls"] and a["json"] == b["json"]
        assert a["txt"] == b["txt"] and a["bin"] == b["bin"]
        assert np.array_equal(a["x.npy"], b["x.npy"]) and a["x.npy"].dtype == b["x.npy"].dtype


def test_torch_decode_and_batched_collation(local_shards):
    ds = dl.DriftDataset(local_shards, shuffle=False).decode("torch").to_tuple("x.npy", "cls")
    batches = list(ds.batched(16))
    assert [len(b[1]) for b in batches] == [16] * 6 + [4]
    x, cls = batches[0]
    assert x.shape == (16, 64) and isinstance(cls, np.ndarray)
    theirs = next(
        iter(
            wds.WebDataset(local_shards, shardshuffle=False)
            .decode("torch")
            .to_tuple("x.npy", "cls")
            .batched(16)
        )
    )
    assert np.array_equal(np.asarray(x), np.asarray(theirs[0])) and np.array_equal(cls, theirs[1])


def test_map_map_dict_select(local_shards):
    ds = (
        dl.DriftDataset(local_shards, shuffle=False)
        .decode()
        .map_dict(cls=lambda c: c * 10)
        .select(lambda s: s["cls"] >= 50)
        .map(lambda s: s["cls"])
    )
    values = list(ds)
    assert values and all(v >= 50 and v % 10 == 0 for v in values)


def test_shard_order_depends_on_seed_and_epoch(local_shards):
    def order(seed, epoch):
        ds = dl.DriftDataset(local_shards, seed=seed)
        ds.set_epoch(epoch)
        return [s["__key__"] for s in ds]

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == sorted(order(0, 1))
    orders = {tuple(order(0, e)) for e in range(6)}
    assert len(orders) > 1


def test_sample_shuffle_is_reproducible(local_shards):
    def keys(epoch):
        ds = dl.DriftDataset(local_shards, shuffle=False).shuffle(50)
        ds.set_epoch(epoch)
        return [s["__key__"] for s in ds]

    assert keys(1) == keys(1) and keys(1) != keys(2) and sorted(keys(1)) == sorted(keys(2))


@pytest.mark.parametrize("workers", [0, 1, 2, 4])
def test_every_sample_exactly_once_with_workers(tmp_path, workers):
    urls = []
    for s in range(6):
        write_shard(tmp_path / f"w-{s}.tar", 7, seed=s, start=s * 100)
        urls.append(str(tmp_path / f"w-{s}.tar"))
    ds = dl.DriftDataset(urls).map(lambda s: s["__key__"])
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    keys = list(loader)
    assert len(keys) == 42 and len(set(keys)) == 42


def test_s3_dataloader_two_workers(s3_bucket, s3fs_fresh, tmp_path):
    expected = []
    for s in range(4):
        expected += write_shard(tmp_path / f"{s}.tar", 10, seed=s, start=s * 100)
        s3fs_fresh.put(str(tmp_path / f"{s}.tar"), f"{s3_bucket}/d/shard-{s:06d}.tar")
    ds = (
        dl.DriftDataset(f"s3://{s3_bucket}/d/shard-{{000000..000003}}.tar")
        .decode()
        .to_tuple("__key__", "cls")
    )
    got = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert sorted(k for k, _ in got) == sorted(s["__key__"] for s in expected)
    by_key = {s["__key__"]: int(s["cls"]) for s in expected}
    assert all(by_key[k] == c for k, c in got)


def test_corrupt_shard_raises_by_default_and_is_counted_when_skipped(local_shards, tmp_path):
    bad = tmp_path / "shard-bad.tar"
    data = Path(local_shards[1]).read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    urls = [local_shards[0], str(bad), local_shards[2]]
    with pytest.raises(dl.ShardReadError, match="shard-bad.tar"):
        list(dl.DriftDataset(urls, shuffle=False))
    ds = dl.DriftDataset(urls, shuffle=False, on_error="skip")
    keys = [s["__key__"] for s in ds]
    assert len(keys) >= 50 and ds.stats.errors == 1 and ds.stats.skipped_shards == [str(bad)]
    assert ds.stats.shards == 2


def test_missing_shard_with_handler(local_shards, tmp_path):
    seen = []
    ds = dl.DriftDataset(
        [str(tmp_path / "gone.tar"), local_shards[0]],
        shuffle=False,
        on_error=lambda e: seen.append(e) or True,
    )
    assert len(list(ds)) == 25 and "gone.tar" in str(seen[0])


def test_bad_arguments_are_named(local_shards, tmp_path):
    with pytest.raises(NoShardsError, match="zzz"):
        dl.DriftDataset(str(tmp_path / "zzz-*.tar"))
    with pytest.raises(ValueError, match="on_error='explode'"):
        dl.DriftDataset(local_shards, on_error="explode")
    with pytest.raises(ValueError, match="batchsize"):
        dl.DriftDataset(local_shards).batched(0)


def test_with_epoch_gives_equal_counts_and_with_length(local_shards):
    ds = dl.DriftDataset(local_shards[:1]).with_epoch(60).with_length(60)
    keys = [s["__key__"] for s in ds]
    assert len(keys) == 60 == len(ds) and len(set(keys)) == 25


def test_pickle_fields_are_not_unpickled_by_default(tmp_path):
    import pickle

    path = tmp_path / "p.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "a", "pyd": pickle.dumps({"x": 1}), "cls": b"1"})
    with pytest.warns(UserWarning, match="pickle decoding is off"):
        (sample,) = list(dl.DriftDataset(str(path)).decode())
    assert isinstance(sample["pyd"], bytes)
    (sample,) = list(dl.DriftDataset(str(path)).decode(allow_pickle=True))
    assert sample["pyd"] == {"x": 1}


def test_decode_error_names_sample(tmp_path):
    path = tmp_path / "e.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "bad", "cls": b"notanint"})
    with pytest.raises(ValueError, match="'bad'.*e.tar"):
        list(dl.DriftDataset(str(path)).decode())


def test_is_a_torch_iterable_dataset(local_shards):
    assert isinstance(dl.DriftDataset(local_shards), torch.utils.data.IterableDataset)


# ------------------------------------------------------------- webdataset compatibility


def _keys(ds) -> list[str]:
    return [s["__key__"] for s in ds]


def test_shardshuffle_is_an_alias_of_shuffle(local_shards):
    unshuffled = _keys(dl.DriftDataset(local_shards, shuffle=False))
    shuffled = _keys(dl.DriftDataset(local_shards, shuffle=True, seed=3))
    assert shuffled != unshuffled
    for value in (False, 0):
        assert _keys(dl.DriftDataset(local_shards, shardshuffle=value)) == unshuffled
    for value in (True, 1, 100):
        assert _keys(dl.DriftDataset(local_shards, shardshuffle=value, seed=3)) == shuffled
    with pytest.raises(ValueError, match="shardshuffle=-1"):
        dl.DriftDataset(local_shards, shardshuffle=-1)
    with pytest.raises(ValueError, match="shuffle=False and shardshuffle=100"):
        dl.DriftDataset(local_shards, shuffle=False, shardshuffle=100)


def test_handler_is_an_alias_of_on_error(local_shards, tmp_path):
    bad = tmp_path / "bad.tar"
    data = Path(local_shards[1]).read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    ds = dl.DriftDataset(
        [str(bad), local_shards[0]], shardshuffle=False, handler=wds.warn_and_continue
    )
    with pytest.warns(UserWarning, match="bad.tar"):
        keys = _keys(ds)
    assert len(keys) >= 25 and ds.stats.errors == 1
    with pytest.raises(ValueError, match="on_error='skip' and handler="):
        dl.DriftDataset(local_shards, on_error="skip", handler=wds.ignore_and_continue)


def test_webdataset_splitters(local_shards, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    every = set(_keys(dl.DriftDataset(local_shards, split_by_node=False)))
    half = set(_keys(dl.DriftDataset(local_shards)))
    assert len(every) == 100 and len(half) == 50
    assert set(_keys(dl.DriftDataset(local_shards, nodesplitter=None))) == every
    assert set(_keys(dl.DriftDataset(local_shards, nodesplitter=wds.split_by_node))) == half
    single = dl.DriftDataset(local_shards, nodesplitter=wds.single_node_only)
    with pytest.raises(ValueError, match="single_node_only but there are 2 ranks"):
        list(single)
    with pytest.raises(ValueError, match="nodesplitter=.*split_by_node=True/False"):
        dl.DriftDataset(local_shards, nodesplitter=lambda src: src)
    with pytest.raises(ValueError, match="split_by_node=True and nodesplitter=None"):
        dl.DriftDataset(local_shards, split_by_node=True, nodesplitter=None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert len(_keys(single)) == 100


def test_workersplitter_none_reads_every_shard_in_every_worker(local_shards):
    def keys(**kw):
        ds = dl.DriftDataset(local_shards, **kw).map(lambda s: s["__key__"])
        return list(DataLoader(ds, batch_size=None, num_workers=2))

    assert len(keys(workersplitter=wds.split_by_worker)) == 100
    both = keys(workersplitter=None)
    assert len(both) == 200 and len(set(both)) == 100
    with pytest.raises(ValueError, match="workersplitter=.*split_by_worker"):
        dl.DriftDataset(local_shards, workersplitter=wds.split_by_node)


def test_empty_check(local_shards, tmp_path):
    empty = tmp_path / "empty.tar"
    with wds.TarWriter(str(empty)):
        pass
    with pytest.raises(ValueError, match="read no samples.*empty_check=False"):
        list(dl.DriftDataset(str(empty)))  # on by default, as webdataset's
    assert list(dl.DriftDataset(str(empty), empty_check=False)) == []
    # like webdataset's, the check counts samples read, not what the pipeline keeps
    kept = dl.DriftDataset(local_shards[:1]).select(lambda s: False)
    assert list(kept) == []
    # one shard, two workers: the worker without a shard fails unless told not to check
    ds = dl.DriftDataset(local_shards[:1]).map(lambda s: s["__key__"])
    with pytest.raises(ValueError, match="worker 1 read no samples"):
        list(DataLoader(ds, batch_size=None, num_workers=2))
    ds = dl.DriftDataset(local_shards[:1], empty_check=False).map(lambda s: s["__key__"])
    assert len(list(DataLoader(ds, batch_size=None, num_workers=2))) == 25


def test_cache_dir_is_refused_clearly(local_shards, tmp_path):
    with pytest.raises(ValueError, match="cache_dir=.*does not cache"):
        dl.DriftDataset(local_shards, cache_dir=str(tmp_path))
    dl.DriftDataset(local_shards, resampled=False, cache_dir=None)


def test_more_webdataset_arguments(local_shards):
    with pytest.raises(ValueError, match=r"repeat=True.*\.with_epoch\(n\)"):
        dl.DriftDataset(local_shards, repeat=True)
    with pytest.raises(ValueError, match=r"select_files=.*whole samples.*\.rename"):
        dl.DriftDataset(local_shards, select_files=lambda name: True)
    with pytest.raises(ValueError, match="rename_files="):
        dl.DriftDataset(local_shards, rename_files=str.upper)
    keys = [s["__key__"] for s in dl.DriftDataset(local_shards, detshuffle=True)]
    assert keys == [s["__key__"] for s in dl.DriftDataset(local_shards, detshuffle=False)]


@pytest.mark.parametrize("keep", [True, False])
def test_rename_matches_webdataset(local_shards, keep):
    names = dict(image="jpg;x.npy", label="cls", extra=["png", "txt"])
    theirs = list(
        wds.WebDataset(local_shards, shardshuffle=False).decode().rename(keep=keep, **names)
    )
    ours = list(dl.DriftDataset(local_shards, shuffle=False).decode().rename(keep=keep, **names))
    assert len(ours) == len(theirs) == 100
    for a, b in zip(ours, theirs):
        assert sorted(a) == sorted(b) and a["label"] == b["label"] and a["extra"] == b["extra"]
        assert np.array_equal(a["image"], b["image"])
    assert ("x.npy" in ours[0]) is False and ("json" in ours[0]) is keep


def test_rename_missing_field_and_bad_names(local_shards):
    with pytest.raises(ValueError, match="sample.*no field 'jpg;png' to rename to 'image'"):
        list(dl.DriftDataset(local_shards).rename(image="jpg;png"))
    skipped = dl.DriftDataset(local_shards).rename(handler=wds.ignore_and_continue, image="jpg")
    assert list(skipped) == []
    with pytest.raises(ValueError, match="rename\\(image=3\\)"):
        dl.DriftDataset(local_shards).rename(image=3)


def test_unbatched_matches_webdataset(local_shards):
    def pipeline(ds):
        return ds.decode().to_tuple("x.npy", "cls").batched(16).unbatched()

    theirs = list(pipeline(wds.WebDataset(local_shards, shardshuffle=False)))
    ours = list(pipeline(dl.DriftDataset(local_shards, shuffle=False)))
    plain = list(dl.DriftDataset(local_shards, shuffle=False).decode().to_tuple("x.npy", "cls"))
    assert len(ours) == len(theirs) == len(plain) == 100
    for (x, c), (y, d), (z, e) in zip(ours, theirs, plain):
        assert np.array_equal(x, y) and np.array_equal(x, z) and c == d == e
    dicts = dl.DriftDataset(local_shards, shuffle=False).map(lambda s: {"k": s["__key__"]})
    assert [s["k"] for s in dicts.batched(7).unbatched()] == _keys(
        dl.DriftDataset(local_shards, shuffle=False)
    )
    with pytest.raises(ValueError, match="cannot unbatch a str"):
        list(dl.DriftDataset(local_shards).map(lambda s: s["__key__"]).unbatched())


def test_compose_takes_webdataset_style_stages(local_shards):
    def first_ten(src):
        for i, sample in enumerate(src):
            if i < 10:
                yield sample

    def ours(data, ctx, n):
        return (s for i, s in enumerate(data) if i < n)

    base = _keys(dl.DriftDataset(local_shards, shuffle=False))
    assert _keys(dl.DriftDataset(local_shards, shuffle=False).compose(first_ten)) == base[:10]
    assert _keys(dl.DriftDataset(local_shards, shuffle=False).compose(ours, 5)) == base[:5]
    curried = wds.filters.select(lambda s: s["__key__"].endswith("0"))  # webdataset's own stage
    got = _keys(dl.DriftDataset(local_shards, shuffle=False).compose(curried))
    assert got == [k for k in base if k.endswith("0")] and got
    lam = list(dl.DriftDataset(local_shards).compose(lambda src: (s["cls"] for s in src)))
    assert len(lam) == 100


def test_one_on_error_table_for_the_package(local_shards, tmp_path):
    from driftloader.check import check_shards
    from driftloader.handlers import ON_ERROR
    from driftloader.profiling import profile_shards

    for name, handler in ON_ERROR.items():
        assert dl.DriftDataset(local_shards, on_error=name).handler is handler
    store = dl.ProfileStore(str(tmp_path / "store"))
    for call in (
        lambda: profile_shards(local_shards, store, on_error="warn"),
        lambda: check_shards(local_shards, store, "ref", on_error="warn"),
    ):
        with pytest.raises(ValueError, match="on_error='warn'; use one of 'raise', 'skip'"):
            call()
