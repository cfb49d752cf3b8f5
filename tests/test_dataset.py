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
