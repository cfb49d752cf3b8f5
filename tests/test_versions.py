"""Snapshots, pinned reads, diffs, quarantine and clean manifests on the moto S3 server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from driftloader import DriftDataset, ProfileStore
from driftloader.check import check_shards
from driftloader.cli import main
from driftloader.errors import VersionMismatch
from driftloader.profiling import profile_shards
from driftloader.sources import expand_urls, stat_shards
from driftloader.versions import (
    QUARANTINE_TAG,
    diff,
    load_exclusions,
    snapshot,
    write_manifest,
)

from .conftest import write_shard

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def put_shard(fs, tmp_path: Path, url: str, n: int = 30, seed: int = 0, shift: float = 0.0):
    """Write a shard locally and upload it to ``url``; returns the samples."""
    local = tmp_path / f"up-{uuid.uuid4().hex[:8]}.tar"
    samples = write_shard(local, n, seed=seed, shift=shift)
    fs.put(str(local), url.removeprefix("s3://"))
    fs.invalidate_cache()
    return samples


def read_all(urls) -> list[tuple[str, bytes]]:
    return [(s["__key__"], s["x.npy"]) for s in DriftDataset(urls)]


@pytest.fixture
def plain_bucket(s3_env: str) -> str:
    """A bucket without versioning: shard versions are ETags."""
    import boto3

    name = f"plain-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


def test_snapshot_pins_version_ids_and_reads_old_bytes_after_overwrite(
    s3_bucket, s3fs_fresh, tmp_path
):
    url = f"s3://{s3_bucket}/data/shard-000000.tar"
    old = put_shard(s3fs_fresh, tmp_path, url, seed=0)
    manifest = snapshot(f"s3://{s3_bucket}/data/*.tar")
    (entry,) = manifest["shards"]
    assert entry["url"] == url and entry["version"].startswith("v:") and entry["size"] > 0
    path = str(tmp_path / "manifest.json")
    write_manifest(manifest, path)
    put_shard(s3fs_fresh, tmp_path, url, seed=1, n=12)
    assert read_all(path) == [(s["__key__"], s["x.npy"]) for s in old]
    assert read_all(url) != read_all(path)
    (pinned,) = stat_shards(expand_urls(path))
    assert pinned.version == entry["version"] and pinned.pinned


def test_etag_pinned_shard_that_changed_is_an_error_naming_it(plain_bucket, s3fs_fresh, tmp_path):
    url = f"s3://{plain_bucket}/data/shard-000000.tar"
    put_shard(s3fs_fresh, tmp_path, url, seed=0)
    path = str(tmp_path / "m.json")
    assert main(["snapshot", url, "-o", path]) == 0
    (entry,) = json.loads(Path(path).read_text())["shards"]
    assert entry["version"].startswith("e:")
    stat_shards(expand_urls(path))  # unchanged: fine
    put_shard(s3fs_fresh, tmp_path, url, seed=1)
    with pytest.raises(VersionMismatch, match="shard-000000.tar"):
        stat_shards(expand_urls(path))
    with pytest.raises(VersionMismatch, match=entry["version"]):
        DriftDataset(path)  # no store: the pinned shard is still checked before reading
    store = ProfileStore(str(tmp_path / "store"))
    with pytest.raises(VersionMismatch, match=entry["version"]):
        DriftDataset(path, store=store)


def test_deleted_version_is_an_error_naming_it(s3_bucket, s3fs_fresh, tmp_path):
    import boto3

    url = f"s3://{s3_bucket}/data/shard-000000.tar"
    put_shard(s3fs_fresh, tmp_path, url)
    manifest = snapshot(url)
    path = str(tmp_path / "m.json")
    write_manifest(manifest, path)
    version = manifest["shards"][0]["version"]
    client = boto3.client("s3")
    client.delete_object(Bucket=s3_bucket, Key="data/shard-000000.tar", VersionId=version[2:])
    with pytest.raises(VersionMismatch, match="shard-000000.tar.*no longer exists"):
        stat_shards(expand_urls(path))


def test_snapshot_carries_profile_summary_and_never_credentials(
    s3_bucket, s3fs_fresh, tmp_path, capsys
):
    url = f"s3://{s3_bucket}/data/shard-000000.tar"
    put_shard(s3fs_fresh, tmp_path, url)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(url, store, progress=False)
    path = str(tmp_path / "m.json")
    argv = ["snapshot", url, "-o", path, "--store", str(tmp_path / "store")]
    argv += ["--storage-option", "key=testing", "--storage-option", "secret=s3cr3t-value"]
    assert main(argv) == 0
    text = Path(path).read_text()
    assert "s3cr3t" not in text and "s3cr3t" not in capsys.readouterr().out
    (entry,) = json.loads(text)["shards"]
    assert entry["profile"]["n"] == 30 and entry["profile"]["fingerprint"]


def test_diff_added_removed_changed_and_drift(s3_bucket, s3fs_fresh, tmp_path, capsys):
    base = f"s3://{s3_bucket}/data/shard-"
    for i in range(2):
        put_shard(s3fs_fresh, tmp_path, f"{base}{i:06d}.tar", n=60, seed=i)
    store = ProfileStore(str(tmp_path / "store"))
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    write_manifest(snapshot(f"{base}*.tar"), a)
    profile_shards(a, store, progress=False)
    store.build_reference("old", a)
    s3fs_fresh.rm(f"{s3_bucket}/data/shard-000000.tar")
    put_shard(s3fs_fresh, tmp_path, f"{base}000001.tar", n=60, seed=7, shift=3.0)
    put_shard(s3fs_fresh, tmp_path, f"{base}000002.tar", n=60, seed=8, shift=3.0)
    write_manifest(snapshot(f"{base}*.tar"), b)
    profile_shards(b, store, progress=False)
    result = diff(a, b, store)
    assert result.added == [f"{base}000002.tar"] and result.removed == [f"{base}000000.tar"]
    assert [c["url"] for c in result.changed] == [f"{base}000001.tar"]
    assert result.drift is not None and result.drift.drifted
    # drift between the versions: exit 1, as `check` (#14)
    assert main(["diff", "old", b, "--store", str(tmp_path / "store"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["a"] == "old" and out["added"] == result.added and out["drift"]["drifted"]
    assert main(["diff", a, b, "--store", str(tmp_path / "store")]) == 1
    assert "1 added, 1 removed, 1 changed" in capsys.readouterr().out


def test_diff_without_profiles_lists_changes_only(s3_bucket, s3fs_fresh, tmp_path):
    url = f"s3://{s3_bucket}/data/shard-000000.tar"
    put_shard(s3fs_fresh, tmp_path, url)
    first = snapshot(url)
    put_shard(s3fs_fresh, tmp_path, url, seed=3)
    result = diff(first, snapshot(url), ProfileStore(str(tmp_path / "store")))
    assert len(result.changed) == 1 and result.drift is None and "no stored profile" in result.note


def test_quarantine_tags_drifted_shards_and_clean_manifest(s3_bucket, s3fs_fresh, tmp_path):
    base = f"s3://{s3_bucket}/data/shard-"
    for i in range(2):
        put_shard(s3fs_fresh, tmp_path, f"{base}{i:06d}.tar", n=150, seed=i)
    store_url = f"s3://{s3_bucket}/drift"
    store = ProfileStore(store_url)
    profile_shards(f"{base}*.tar", store, progress=False)
    store.build_reference("r", f"{base}*.tar")
    put_shard(s3fs_fresh, tmp_path, f"{base}000002.tar", n=150, seed=5)
    put_shard(s3fs_fresh, tmp_path, f"{base}000003.tar", n=150, seed=6, shift=3.0)
    new = [f"{base}000002.tar", f"{base}000003.tar"]
    results = check_shards(new, store, "r")
    assert [r.drifted for r in results] == [False, True]
    argv = ["quarantine", "--store", store_url, "--reference", "r", "--tag", "status=bad"]
    assert main(argv) == 0
    bad = results[1]
    tags = s3fs_fresh.get_tags(f"{s3_bucket}/data/shard-000003.tar")
    assert tags == {"status": "bad"}
    assert s3fs_fresh.get_tags(f"{s3_bucket}/data/shard-000002.tar") == {}
    assert load_exclusions(store, "r") == {(bad.url, bad.version)}
    clean = str(tmp_path / "clean.json")
    argv = ["clean-manifest", f"{base}*.tar", "--store", store_url, "--reference", "r"]
    assert main([*argv, "-o", clean]) == 0
    shards = json.loads(Path(clean).read_text())["shards"]
    assert [s["url"] for s in shards] == [new[0]]
    assert shards[0]["version"] == results[0].version


def test_quarantine_default_tag_on_exact_version(s3_bucket, s3fs_fresh, tmp_path):
    from driftloader.versions import quarantine

    url = f"s3://{s3_bucket}/data/shard-000000.tar"
    put_shard(s3fs_fresh, tmp_path, url)
    store = ProfileStore(str(tmp_path / "store"))
    (shard,) = stat_shards(expand_urls(url))
    store.record(url, shard.version, {"reference": "r", "drifted": True, "score": 2.0})
    put_shard(s3fs_fresh, tmp_path, url, seed=4)  # a newer version is not quarantined
    result = quarantine(store, "r")
    assert result.tagged == [url] and not result.untagged
    import boto3

    key = "data/shard-000000.tar"
    old = boto3.client("s3").get_object_tagging(
        Bucket=s3_bucket, Key=key, VersionId=shard.version[2:]
    )
    assert old["TagSet"] == [{"Key": QUARANTINE_TAG, "Value": "r"}]
    assert s3fs_fresh.get_tags(f"{s3_bucket}/data/shard-000000.tar") == {}
