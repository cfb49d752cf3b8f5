"""Metadata drift: per-shard metadata from sidecars or a user mapping, recorded in references,
flagged by ``compare`` when a shard declares a source or preprocessing the reference never saw."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from driftloader.check import check_shards
from driftloader.drift import DriftConfig, compare
from driftloader.profile import ProfileConfig
from driftloader.profiling import ShardProfiler, profile_shard, profile_shards, shard_metadata
from driftloader.sources import Shard
from driftloader.store import ProfileStore

from .conftest import write_shard

CONFIG = ProfileConfig(quantile_k=64, reservoir_k=64)
N = 60


def _shard(folder: Path, name: str, seed: int, meta: dict | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_shard(path, N, seed=seed, start=seed * 1000)
    if meta is not None:
        Path(f"{path}.json").write_text(json.dumps(meta))
    return str(path)


def _reference(tmp_path: Path, meta: dict | None = None) -> tuple[ProfileStore, list[str]]:
    store = ProfileStore(str(tmp_path / "store"))
    meta = {"source": "src-a", "preprocessing": "pp-1"} if meta is None else meta
    urls = [_shard(tmp_path / "ref", f"shard-{i:06d}.tar", i, meta) for i in range(3)]
    for url in urls:
        profile_shard(url, store, config=CONFIG)
    store.build_reference("v1", urls)
    return store, urls


def test_sidecar_read_into_profile(tmp_path: Path) -> None:
    meta = {"source": "cams", "preprocessing_fingerprint": "abc", "writer": "w", "created": 1.5}
    url = _shard(tmp_path, "shard-000001.tar", 1, meta)
    profile = profile_shard(url, config=CONFIG)
    assert profile.meta["metadata"] == meta
    assert profile.source == "cams"
    json.dumps(profile.to_dict(), allow_nan=False)


def test_missing_sidecar_is_normal(tmp_path: Path) -> None:
    url = _shard(tmp_path, "shard-000001.tar", 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*sidecar")
        profile = profile_shard(url, config=CONFIG)
    assert "metadata" not in profile.meta
    assert profile.source == str(tmp_path)


def test_user_mapping_dict_and_callable(tmp_path: Path) -> None:
    url = _shard(tmp_path, "shard-000001.tar", 1, {"source": "side", "writer": "w"})
    profile = profile_shard(url, config=CONFIG, metadata={url: {"source": "user"}})
    assert profile.source == "user"
    assert profile.meta["metadata"] == {"source": "user", "writer": "w"}  # user keys win
    other = _shard(tmp_path, "shard-000002.tar", 2)
    profile = profile_shard(other, config=CONFIG, metadata=lambda u: {"preprocessing": u[-5:]})
    assert profile.meta["metadata"] == {"preprocessing": "2.tar"}
    profiler = ShardProfiler(Shard(other), config=CONFIG, metadata={other: {"source": "x"}})
    assert profiler.finish().source == "x" and profiler.profile.meta["metadata"]["source"] == "x"
    with pytest.raises(ValueError, match="JSON"):
        profile_shard(other, config=CONFIG, metadata={other: {"bad": object()}})


def test_invalid_sidecar_warns_and_is_ignored(tmp_path: Path) -> None:
    url = _shard(tmp_path, "shard-000001.tar", 1)
    Path(f"{url}.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="shard-000001.tar.json"):
        profile = profile_shard(url, config=CONFIG)
    assert "metadata" not in profile.meta and profile.n == N
    Path(f"{url}.json").write_text("[1, 2]")
    with pytest.warns(RuntimeWarning, match="shard-000001.tar.json"):
        assert shard_metadata(url) is None


def test_reference_collects_sources_and_preprocessing(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    urls = [
        _shard(tmp_path / "a", "s0.tar", 0, {"source": "a", "preprocessing": "p2"}),
        _shard(tmp_path / "a", "s1.tar", 1, {"source": "b", "preprocessing_fingerprint": "p1"}),
        _shard(tmp_path / "a", "s2.tar", 2, {"source": "a", "preprocessing": "p2"}),
    ]
    for url in urls:
        profile_shard(url, store, config=CONFIG)
    ref = store.build_reference("v1", urls)
    assert ref.meta["sources"] == ["a", "b"]
    assert ref.meta["preprocessing"] == ["p1", "p2"]
    assert store.get_reference("v1").meta["sources"] == ["a", "b"]


def test_new_source_or_preprocessing_is_flagged(tmp_path: Path) -> None:
    store, _ = _reference(tmp_path)
    ref = store.get_reference("v1")
    same = profile_shard(
        _shard(tmp_path / "new", "same.tar", 10, {"source": "src-a", "preprocessing": "pp-1"}),
        config=CONFIG,
    )
    result = compare(same, ref)
    assert not result.drifted and "metadata" not in result.schema

    src = profile_shard(
        _shard(tmp_path / "new", "src.tar", 11, {"source": "new-src", "preprocessing": "pp-1"}),
        config=CONFIG,
    )
    result = compare(src, ref)
    assert result.drifted and result.score >= 1
    assert result.schema == {"metadata": {"source": "new-src"}}
    (entry,) = [f for f in result.features if f.kind == "metadata"]
    assert (entry.metric, entry.value, entry.effect, entry.p_value) == ("source", 1.0, 1.0, 0.0)
    assert entry.drifted and entry.score == DriftConfig().schema_score
    assert entry.detail == {"shard": "new-src", "reference": ["src-a"]}
    assert result.to_dict()["schema"] == {"metadata": {"source": "new-src"}}

    pre = profile_shard(
        _shard(tmp_path / "new", "pre.tar", 12, {"source": "src-a", "preprocessing": "pp-2"}),
        config=CONFIG,
    )
    result = compare(pre, ref)
    assert result.drifted and result.schema == {"metadata": {"preprocessing": "pp-2"}}
    assert [f.metric for f in result.features if f.kind == "metadata"] == ["preprocessing"]

    off = compare(pre, ref, DriftConfig(metadata=False))
    assert not off.drifted and not [f for f in off.features if f.kind == "metadata"]


def test_shard_without_metadata_is_not_flagged(tmp_path: Path) -> None:
    store, _ = _reference(tmp_path)
    bare = profile_shard(_shard(tmp_path / "elsewhere", "bare.tar", 13), config=CONFIG)
    result = compare(bare, store.get_reference("v1"))
    assert not result.drifted and "metadata" not in result.schema


def test_config_flag_validation() -> None:
    assert DriftConfig(metadata=False).metadata is False
    with pytest.raises(ValueError, match="metadata"):
        DriftConfig(metadata=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schema_score"):
        DriftConfig(schema_score=0)


def test_profile_shards_and_check_shards_end_to_end(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "store"))
    meta = {"source": "src-a", "preprocessing": "pp-1"}
    ref_urls = [_shard(tmp_path / "ref", f"shard-{i:06d}.tar", i, meta) for i in range(3)]
    summary = profile_shards(ref_urls, store, config=None, progress=False)
    assert summary.profiled == 3
    ref = store.build_reference("v1", ref_urls)
    assert ref.meta["sources"] == ["src-a"] and ref.meta["preprocessing"] == ["pp-1"]

    new = tmp_path / "new"
    ok = _shard(new, "shard-000010.tar", 10, meta)
    moved = _shard(new, "shard-000011.tar", 11, {"source": "new-src", "preprocessing": "pp-1"})
    bare = _shard(new, "shard-000012.tar", 12)
    mapped = _shard(new, "shard-000013.tar", 13)
    results = check_shards(
        [ok, moved, bare, mapped],
        store,
        "v1",
        metadata={mapped: {"source": "src-a", "preprocessing": "pp-9"}},
    )
    by_url = {r.url: r for r in results}
    assert not by_url[ok].drifted
    assert by_url[moved].drifted and by_url[moved].schema["metadata"] == {"source": "new-src"}
    assert not by_url[bare].drifted
    assert by_url[mapped].schema["metadata"] == {"preprocessing": "pp-9"}
    rows = {r["url"]: r for r in store.catalog()}
    assert rows[moved]["drifted"] is True
    assert rows[moved]["top"][0]["kind"] == "metadata"


def test_the_loader_keeps_metadata_and_skips_a_new_source(tmp_path: Path) -> None:
    """Training fills the store with profiles that carry sidecar and user metadata, and the skip
    policy drops a shard whose sidecar names a source the reference never saw."""
    import driftloader as dl

    store, _ = _reference(tmp_path)
    new = tmp_path / "new"
    same = _shard(new, "same.tar", 20, {"source": "src-a", "preprocessing": "pp-1"})
    moved = _shard(new, "moved.tar", 21, {"source": "new-src", "preprocessing": "pp-1"})
    mapped = _shard(new, "mapped.tar", 22)
    mapping = {mapped: {"source": "src-a", "preprocessing": "pp-1", "writer": "job-7"}}

    monitor = dl.DriftDataset([same, moved, mapped], store=store, metadata=mapping)
    assert sum(1 for _ in monitor) == 3 * N
    stored = {
        Path(u).name: store.get_profile(u, s.version)
        for u, s in zip([same, moved, mapped], monitor.shards)
    }
    assert stored["moved.tar"].meta["metadata"]["source"] == "new-src"
    assert stored["moved.tar"].source == "new-src"
    assert stored["mapped.tar"].meta["metadata"]["writer"] == "job-7"

    def skipping(store: ProfileStore) -> dl.DriftDataset:
        urls = [same, moved, mapped]
        opts = dict(store=store, reference="v1", policy="skip", metadata=mapping, probe=16)
        return dl.DriftDataset(urls, shuffle=False, **opts)

    # Profiles stored by the monitor run: decided before reading; a fresh store: after a probe.
    fresh, _ = _reference(tmp_path / "fresh")
    for ds, action in ((skipping(store), "skipped"), (skipping(fresh), "dropped after probe")):
        assert {Path(s["__url__"]).name for s in ds} == {"same.tar", "mapped.tar"}
        (row,) = [r for r in ds.drift_report() if r["drifted"]]
        assert Path(row["url"]).name == "moved.tar" and row["action"] == action


def test_loader_metadata_needs_a_store(tmp_path: Path) -> None:
    import driftloader as dl

    url = _shard(tmp_path, "a.tar", 1)
    with pytest.raises(ValueError, match="metadata="):
        dl.DriftDataset([url], metadata={url: {"source": "x"}})


def test_a_sidecar_on_s3_is_one_request_found_or_not(
    tmp_path: Path, s3_proxy, s3_bucket, s3fs_fresh
) -> None:
    """Every shard profiled asks for its sidecar: one GET, whether it is there or not (a HEAD
    and a GET, or a HEAD and a listing, before)."""
    from driftloader.profiling import read_sidecar

    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3fs_fresh.pipe(f"{s3_bucket}/d/a.tar.json", json.dumps({"source": "crawl-7"}).encode())
    s3_proxy.reset_stats()
    assert read_sidecar(f"s3://{s3_bucket}/d/a.tar", options) == {"source": "crawl-7"}
    assert read_sidecar(f"s3://{s3_bucket}/d/b.tar", options) is None
    asked = [(r.method, r.target.split("?")[0].rsplit("/", 1)[-1]) for r in s3_proxy.requests]
    assert asked == [("GET", "a.tar.json"), ("GET", "b.tar.json")]


def test_the_gate_reads_s3_sidecars_ahead_of_the_shards_it_profiles(
    tmp_path: Path, s3_proxy, s3_bucket, s3fs_fresh
) -> None:
    """A first gated pass over S3 shards with no stored profile: each shard is profiled as it
    streams, with its sidecar. The sidecars are read ahead with the profiles (100 ms away; the
    first shard's sidecar answers 1 s late): the third shard's is asked for before the second
    shard's first sample, where it used to hold the third shard's first sample for a round
    trip. Each profile keeps its sidecar."""
    import time

    import driftloader as dl

    store, _ = _reference(tmp_path)
    urls = []
    for i in range(3):
        local = _shard(tmp_path / "up", f"s-{i}.tar", 30 + i, {"source": f"src-{i}"})
        urls.append(f"s3://{s3_bucket}/d/s-{i}.tar")
        s3fs_fresh.put(local, urls[-1].removeprefix("s3://"))
        s3fs_fresh.put(f"{local}.json", f"{urls[-1].removeprefix('s3://')}.json")
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    ds = dl.DriftDataset(urls, store=store, reference="v1", shuffle=False, storage_options=options)
    s3_proxy.latency_ms = 100
    s3_proxy.add_fault("stall", method="GET", path=r"s-0\.tar\.json", seconds=1.0)
    s3_proxy.reset_stats()
    second_starts, n = None, 0
    for _ in ds:
        n += 1
        if n == N + 1:
            second_starts = time.monotonic()
    asked = [r.started for r in s3_proxy.requests if r.target.split("?")[0].endswith(".tar.json")]
    assert n == 3 * N and len(asked) == 3
    assert max(asked) < second_starts
    for i, shard in enumerate(ds.shards):
        assert store.get_profile(shard.url, shard.version).source == f"src-{i}"
