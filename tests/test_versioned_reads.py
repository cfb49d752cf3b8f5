"""A gated dataset over S3 shards the decision index found clean versions each shard by its
first GET: no listing and no HEAD before the first sample, and a shard rewritten since its
decision is decided again at the version it was read at."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from driftloader.dataset import DriftDataset
from driftloader.errors import ShardReadError
from driftloader.profiling import profile_shards
from driftloader.store import ProfileStore

from .conftest import new_bucket, write_shard

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")

NAMES = [f"clean-{i}.tar" for i in range(4)] + ["drift-0.tar"]


def _corpus(tmp_path: Path, fs, bucket: str, store: ProfileStore, options: dict) -> list[str]:
    """Five S3 shards (four clean, one drifted), profiled, and a reference "ref"."""
    data = tmp_path / "data"
    data.mkdir()
    ref = [str(data / f"ref-{i}.tar") for i in range(2)]
    for i, url in enumerate(ref):
        write_shard(url, 200, seed=i)
    for i, name in enumerate(NAMES):
        write_shard(data / name, 80, seed=10 + i, shift=3.0 if name.startswith("drift") else 0.0)
        fs.put(str(data / name), f"{bucket}/data/{name}")
    urls = [f"s3://{bucket}/data/{name}" for name in NAMES]
    profile_shards(ref + urls, store, progress=False, storage_options=options)
    store.build_reference("ref", ref)
    return urls


def _gated(urls: list[str], store: ProfileStore, options: dict, **kwargs) -> DriftDataset:
    return DriftDataset(
        urls, store=store.url, reference="ref", policy="skip", storage_options=options,
        shuffle=False, **kwargs,
    )  # fmt: skip


def _shard_requests(proxy) -> list[tuple[str, str]]:
    """(method, what) of the requests about the data shards: "list", or the shard's name."""
    found = []
    for r in proxy.requests:
        path, _, query = unquote(r.target).partition("?")
        if "list-type" in query or "versions" in query:
            if "prefix=data" in query and ".json" not in query:  # not a sidecar's lookup
                found.append((r.method, "list"))
        elif "/data/" in path:
            found.append((r.method, path.rpartition("/")[2]))
    return found


@pytest.mark.parametrize("versioned", [True, False], ids=["version-ids", "etags"])
def test_decided_clean_s3_shards_are_read_with_no_listing_and_no_head(
    tmp_path: Path, s3_proxy, s3fs_fresh, versioned: bool
) -> None:
    """The second run lists nothing and sends no HEAD for the four shards decided clean: each
    is versioned by its first GET, at the version a listing gives, and decided from memory.
    The drifted one is stat'ed (a HEAD) and not fetched."""
    bucket = new_bucket(s3_proxy.endpoint, versioned)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{bucket}/drift", options)
    urls = _corpus(tmp_path, s3fs_fresh, bucket, store, options)
    assert sum(1 for _ in _gated(urls, store, options)) == 4 * 80  # decides, from the profiles

    s3_proxy.reset_stats()
    ds = _gated(urls, store, options)
    assert sum(1 for _ in ds) == 4 * 80
    requests = _shard_requests(s3_proxy)
    assert ("HEAD", "drift-0.tar") in requests
    assert [r for r in requests if r[0] != "GET" and r[1] != "drift-0.tar"] == []  # was a list
    assert {name for method, name in requests if method == "GET"} == set(NAMES[:4])
    rows = {Path(r["url"]).name: (r["action"], r["version"]) for r in ds.drift_report()}
    listed = {Path(s.url).name: s.version for s in ds.shards}  # stats them all now
    assert rows == {
        **{name: ("passed", listed[name]) for name in NAMES[:4]},
        "drift-0.tar": ("skipped", listed["drift-0.tar"]),
    }
    assert all(v.startswith("v:" if versioned else "e:") for v in listed.values())


def test_a_shard_rewritten_since_its_clean_decision_is_decided_at_its_new_version(
    tmp_path: Path, s3_proxy, s3fs_fresh
) -> None:
    """clean-0 is rewritten with drifted samples and clean-1 deleted after the decisions were
    taken. The next run, still with no listing, reads clean-0's new bytes, finds them
    drifted (the probe) and passes none of them; clean-1 fails, named, under its own row."""
    bucket = new_bucket(s3_proxy.endpoint, versioned=True)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{bucket}/drift", options)
    urls = _corpus(tmp_path, s3fs_fresh, bucket, store, options)
    assert sum(1 for _ in _gated(urls, store, options)) == 4 * 80
    old = {Path(s.url).name: s.version for s in _gated(urls, store, options).shards}
    rewritten = tmp_path / "rewritten.tar"
    write_shard(rewritten, 80, seed=99, shift=3.0)
    s3fs_fresh.put(str(rewritten), f"{bucket}/data/clean-0.tar")
    s3fs_fresh.rm(f"{bucket}/data/clean-1.tar")

    s3_proxy.reset_stats()
    ds = _gated(urls, store, options, on_error="skip")
    keys = [sample["__key__"] for sample in ds]
    assert len(keys) == 2 * 80  # clean-2 and clean-3: none of clean-0's new drifted samples
    assert [r for r in _shard_requests(s3_proxy) if r[1] == "list"] == []
    assert ds.stats.errors == 1 and ds.stats.skipped_shards == [urls[1]]
    rows = {Path(r["url"]).name: r for r in ds.drift_report()}
    assert rows["clean-0.tar"]["action"] == "dropped after probe"
    assert rows["clean-0.tar"]["version"] not in (None, old["clean-0.tar"])
    assert rows["clean-1.tar"]["action"] == "failed"
    assert "does not exist" in rows["clean-1.tar"]["error"]
    with pytest.raises(ShardReadError, match="clean-1.tar"):
        sum(1 for _ in _gated(urls, store, options))


def _named(sample: dict) -> str:
    return f"{sample['__url__']}#{sample['__key__']}"


def test_dataloader_workers_version_decided_shards_by_their_first_get(
    tmp_path: Path, s3_proxy, s3fs_fresh
) -> None:
    """Each DataLoader worker reads its decided shards with no listing and no HEAD, and the
    decisions it takes at the versions it read reach ``drift_report``."""
    from torch.utils.data import DataLoader

    bucket = new_bucket(s3_proxy.endpoint, versioned=False)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{bucket}/drift", options)
    urls = _corpus(tmp_path, s3fs_fresh, bucket, store, options)
    assert sum(1 for _ in _gated(urls, store, options)) == 4 * 80
    s3_proxy.reset_stats()
    ds = _gated(urls, store, options)
    loader = DataLoader(ds.map(_named), batch_size=None, num_workers=2)
    assert len(set(loader)) == 4 * 80
    requests = _shard_requests(s3_proxy)
    assert [r for r in requests if r[0] != "GET" and r[1] != "drift-0.tar"] == []
    assert ("GET", "list") not in requests
    rows = {Path(r["url"]).name: r["action"] for r in ds.drift_report()}
    assert rows == {**{name: "passed" for name in NAMES[:4]}, "drift-0.tar": "skipped"}


@pytest.mark.parametrize("k", [0, 100, 4 * 80])
def test_a_run_over_shards_versioned_as_read_resumes_exactly(
    tmp_path: Path, s3_proxy, s3fs_fresh, k: int
) -> None:
    """Saved mid-epoch, the state holds every shard's version (``state_dict`` stats them);
    the resumed run yields exactly the samples not yet yielded, with the same decisions."""
    from .test_resume import check_resume

    bucket = new_bucket(s3_proxy.endpoint, versioned=True)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{bucket}/drift", options)
    urls = _corpus(tmp_path, s3fs_fresh, bucket, store, options)
    assert sum(1 for _ in _gated(urls, store, options)) == 4 * 80
    check_resume(lambda: _gated(urls, store, options), k)


def test_a_few_shards_left_to_stat_among_many_get_a_head_each_not_a_listing(
    s3_proxy, s3fs_fresh
) -> None:
    """Left to stat: 1 shard of 70 (HEADs: one round trip per 16; the listing: one per 1,000
    keys of the folder, one after the other) is HEADed; 10 of 70 come from one listing."""
    from driftloader.dataset import remote_stat
    from driftloader.sources import expand_urls

    bucket = new_bucket(s3_proxy.endpoint, versioned=False)
    s3fs_fresh.pipe({f"{bucket}/data/s-{i:03d}.tar": b"x" * (i + 1) for i in range(70)})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    shards = expand_urls(f"s3://{bucket}/data/s-{{000..069}}.tar")
    for left, expected in ((1, [("HEAD", "s-069.tar")]), (10, [("GET", "list")])):
        s3_proxy.reset_stats()
        clean = {s.url for s in shards[: 70 - left]}
        stated = remote_stat(shards, options, clean)
        assert _shard_requests(s3_proxy) == expected
        assert [s.version is not None for s in stated] == [False] * (70 - left) + [True] * left
        assert [s.size for s in stated[70 - left :]] == list(range(71 - left, 71))


def test_a_gated_glob_keeps_the_versions_its_listing_gave(
    tmp_path: Path, s3_proxy, s3fs_fresh, monkeypatch
) -> None:
    """A glob's shards come with the versions and sizes of the listing just taken: a gated
    dataset stats none of them again (``stat_shards`` made 100k Shards anew, 0.4 s before the
    first sample), reads them all, and ``shards`` hands them out without the ``listed`` mark,
    so that a later ``stat_shards`` of them lists again rather than trust an old listing."""
    import driftloader.dataset as dataset_module

    bucket = new_bucket(s3_proxy.endpoint, versioned=False)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{bucket}/drift", options)
    _corpus(tmp_path, s3fs_fresh, bucket, store, options)
    stats, real = [], dataset_module.stat_shards
    monkeypatch.setattr(
        dataset_module,
        "stat_shards",
        lambda shards, *a, **k: stats.append(1) or real(shards, *a, **k),
    )
    s3_proxy.reset_stats()
    ds = _gated(f"s3://{bucket}/data/*.tar", store, options)
    assert stats == [] and [r for r in _shard_requests(s3_proxy) if r[1] != "list"] == []
    assert sum(1 for _ in ds) == 4 * 80  # the drifted shard skipped
    listed = {s.url: (s.version, s.size) for s in ds._given}
    assert all(s.listed for s in ds._given) and len(listed) == 5
    handed = ds.shards
    assert {s.url: (s.version, s.size) for s in handed} == listed
    assert not any(s.listed for s in handed)


def test_a_first_gated_run_reads_the_stored_profiles_ahead_concurrently(
    tmp_path: Path, s3_proxy, s3fs_fresh
) -> None:
    """With no decision yet, each shard is decided from its stored profile. Those reads are
    made ahead of the reader, several at once: at 150 ms a request, one after the other they
    put a round trip per shard on the sample path."""
    bucket = new_bucket(s3_proxy.endpoint, versioned=False)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{bucket}/drift", options)
    urls = _corpus(tmp_path, s3fs_fresh, bucket, store, options)
    ds = _gated(urls, store, options)
    s3_proxy.latency_ms = 150
    s3_proxy.reset_stats()
    assert sum(1 for _ in ds) == 4 * 80
    reads = sorted(
        r.started for r in s3_proxy.requests if r.method == "GET" and "/drift/shards/" in r.target
    )
    assert len(reads) == 5  # one profile read per shard
    assert reads[-1] - reads[0] < 0.15  # one after the other: >= 0.6 s from first to last
    rows = {Path(r["url"]).name: r["action"] for r in ds.drift_report()}
    assert rows == {**{name: "passed" for name in NAMES[:4]}, "drift-0.tar": "skipped"}
