"""A shard that fails mid-read under on_error="skip": nothing good is lost with the gate on,
every sample is counted once, the failure has a report row, and all of it reaches the main
process from DataLoader workers (issue #15, items 1 and 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader

import driftloader as dl
from driftloader.profiling import profile_shards
from driftloader.sources import filesystem

from .conftest import write_gated_corpus, write_shard


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The gated corpus (reference "ref", two clean shards, profiled) and a clean shard of
    100 samples cut at 60% of its bytes, never profiled."""
    root = tmp_path_factory.mktemp("failures")
    corpus = write_gated_corpus(root, [40, 30], 0)
    bad = root / "data" / "truncated.tar"
    write_shard(bad, 100, seed=50, start=50_000)
    data = bad.read_bytes()
    bad.write_bytes(data[: int(len(data) * 0.6)])
    return {**corpus, "bad": str(bad)}


def _key(sample: dict) -> str:
    return sample["__key__"]


GATES = {
    "store": {},
    "monitor": {"reference": "ref"},
    "skip": {"reference": "ref", "policy": "skip"},
    "reweight": {"reference": "ref", "policy": "reweight"},
    "resample": {"reference": "ref", "policy": "resample"},
}


@pytest.mark.parametrize("gate", sorted(GATES))
def test_the_gate_keeps_the_good_samples_of_a_failing_shard(corpus, gate):
    urls = [corpus["bad"], *corpus["clean"]]
    plain = dl.DriftDataset(urls, shuffle=False, on_error="skip")
    expected = [_key(s) for s in plain]
    assert 0 < len(expected) - 70 < 100 and plain.stats.errors == 1
    ds = dl.DriftDataset(urls, shuffle=False, on_error="skip", store=corpus["store"], **GATES[gate])
    keys = [_key(s) for s in ds]
    assert sorted(set(keys)) == sorted(expected)
    if gate != "resample":
        assert keys == expected
    assert ds.stats.samples == len(expected) and ds.stats.errors == 1  # each counted once
    assert ds.stats.skipped_shards == [corpus["bad"]]
    (row,) = [r for r in ds.drift_report() if r["url"] == corpus["bad"]]
    assert row["action"] == "failed" and row["n"] == len(expected) - 70
    assert row["offset"] > 0 and f"at byte {row['offset']}" in row["error"]
    bad = ds.shards[0]
    assert not corpus["store"].has_profile(bad.url, bad.version)  # no partial profile stored


def test_the_gate_raises_after_the_good_samples_under_raise(corpus):
    ds = dl.DriftDataset([corpus["bad"]], store=corpus["store"], reference="ref")
    it = iter(ds)
    got = []
    with pytest.raises(dl.ShardReadError, match="truncated.tar"):
        for sample in it:
            got.append(_key(sample))
    assert got == [_key(s) for s in dl.DriftDataset([corpus["bad"]], on_error="skip")]


def test_a_missing_local_shard_fails_where_it_is_read(corpus, tmp_path):
    """A gated dataset stats local files as it reads them: a missing one is a read error of
    that shard, skipped and counted under on_error="skip", raised naming it by default."""
    missing = str(tmp_path / "gone.tar")
    urls = [*corpus["clean"][:1], missing, *corpus["clean"][1:]]
    plain = [_key(s) for s in dl.DriftDataset(corpus["clean"], shuffle=False)]
    gated = dict(store=corpus["store"], reference="ref", policy="skip")
    ds = dl.DriftDataset(urls, shuffle=False, on_error="skip", **gated)
    assert [_key(s) for s in ds] == plain
    assert ds.stats.errors == 1 and ds.stats.skipped_shards == [missing]
    (row,) = [r for r in ds.drift_report() if r["url"] == missing]
    assert row["action"] == "failed" and row["n"] == 0 and "does not exist" in row["error"]
    with pytest.raises(dl.ShardReadError, match="gone.tar.*does not exist"):
        list(dl.DriftDataset(urls, shuffle=False, **gated))


@pytest.mark.parametrize("workers", [0, 2])
def test_stats_and_failed_shards_reach_the_main_process(corpus, workers):
    urls = [corpus["bad"], *corpus["clean"]]
    plain = [_key(s) for s in dl.DriftDataset(urls, on_error="skip")]
    for gate in ({}, {"store": corpus["store"], "reference": "ref", "policy": "skip"}):
        ds = dl.DriftDataset(urls, on_error="skip", **gate)
        keys = list(DataLoader(ds.map(_key), batch_size=None, num_workers=workers))
        assert sorted(keys) == sorted(plain)
        stats = ds.stats
        assert (stats.samples, stats.shards, stats.errors) == (len(plain), 2, 1)
        assert stats.skipped_shards == [corpus["bad"]] and stats.bytes > 0
        if gate:
            failed = [r for r in ds.drift_report() if r["action"] == "failed"]
            assert [Path(r["url"]).name for r in failed] == ["truncated.tar"]
    ds = dl.DriftDataset(urls, on_error="skip")
    for _ in range(2):  # epochs add up, as without workers
        list(DataLoader(ds, batch_size=None, num_workers=workers))
    assert ds.stats.samples == 2 * len(plain) and ds.stats.errors == 2


def test_a_decided_shard_failing_mid_read_has_its_failed_row(s3_proxy, s3_bucket, tmp_path):
    """A shard decided in an earlier pass passes its samples straight on; when its read fails
    mid-shard (a connection reset, no retry left), the samples read before it are kept and
    counted, its row says "failed" with that count, and the other shards pass as decided."""
    corpus = write_gated_corpus(tmp_path, [40, 30, 50], 0)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    fs = filesystem(f"s3://{s3_bucket}/x", options)
    urls = []
    for path in corpus["clean"]:
        fs.put(path, f"{s3_bucket}/data/{Path(path).name}")
        urls.append(f"s3://{s3_bucket}/data/{Path(path).name}")
    store = corpus["store"]
    profile_shards(urls, store, storage_options=options, progress=False)
    gated = dict(store=store, reference="ref", policy="skip", storage_options=options)
    expected = [_key(s) for s in dl.DriftDataset(urls, shuffle=False, **gated)]  # decides them
    assert len(expected) == 120
    # its fourth block on (blocks go out together: the third request to arrive may be the first)
    s3_proxy.add_fault(
        "reset", method="GET", path="clean-1.tar", from_byte=3 * 16_384, after_bytes=100
    )
    ds = dl.DriftDataset(
        urls, shuffle=False, on_error="skip", retries=0, block_size=16_384, **gated
    )
    keys = [_key(s) for s in ds]
    cut = [k for k in expected[40:70] if k in keys]
    assert keys == expected[:40] + cut + expected[70:] and 0 < len(cut) < 30
    rows = {Path(r["url"]).name: r for r in ds.drift_report()}
    assert rows["clean-1.tar"]["action"] == "failed" and rows["clean-1.tar"]["n"] == len(cut)
    assert [rows[f"clean-{i}.tar"]["action"] for i in (0, 2)] == ["passed", "passed"]
    assert ds.stats.samples == len(keys) and ds.stats.errors == 1
