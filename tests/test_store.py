"""ProfileStore on local disk and on a real S3 endpoint (moto): layout, atomicity, references."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from driftloader import reference_build
from driftloader.errors import DriftloaderError, ProfileFormatError, ReferenceNotFound
from driftloader.features import Column
from driftloader.profile import Profile, ProfileConfig
from driftloader.profiling import profile_shard
from driftloader.sources import Shard, filesystem, stat_shard
from driftloader.store import MissingProfiles, ProfileStore, shard_key, url_hash, version_name

from .conftest import write_shard

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")

CONFIG = ProfileConfig(quantile_k=32, categorical_cap=16, token_buckets=64, reservoir_k=16)


def small_profile(url: str, version: str | None, seed: int = 0, n: int = 50) -> Profile:
    rng = np.random.default_rng(seed)
    p = Profile("fp", url=url, version=version, source="test", config=CONFIG)
    p.update(
        {
            "x": Column("numeric", np.ma.asarray(rng.standard_normal(n) + seed)),
            "c": Column("categorical", np.array(rng.choice(["a", "b"], n), dtype=object)),
        }
    )
    return p


@dataclass
class Env:
    """A store plus a place to put shards, on local disk or on S3."""

    store: ProfileStore
    data: str  # URL prefix of the shards
    tmp: Path
    fs: object = None  # s3fs for uploads, None for local

    def put_shard(self, name: str, n: int, seed: int, shift: float = 0.0) -> str:
        local = self.tmp / f"upload-{name}"
        write_shard(local, n, seed=seed, start=seed * 1000, shift=shift)
        url = f"{self.data}/{name}"
        if self.fs is None:
            os.replace(local, url)
        else:
            self.fs.put(str(local), url.removeprefix("s3://"))
        return url

    def files(self) -> list[str]:
        if self.fs is None:
            return [str(p) for p in Path(self.store.root).rglob("*") if p.is_file()]
        self.fs.invalidate_cache()
        return self.fs.find(self.store.root)


@pytest.fixture(params=["local", "s3"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    if request.param == "local":
        (tmp_path / "data").mkdir()
        return Env(ProfileStore(str(tmp_path / "drift")), str(tmp_path / "data"), tmp_path)
    bucket = request.getfixturevalue("s3_bucket")
    fs = request.getfixturevalue("s3fs_fresh")
    return Env(ProfileStore(f"s3://{bucket}/drift"), f"s3://{bucket}/data", tmp_path, fs)


# -- profiles --------------------------------------------------------------------------------


def test_put_get_round_trip(env: Env) -> None:
    p = small_profile(f"{env.data}/a.tar", "v:123")
    path = env.store.put_profile(p)
    digest = url_hash(p.url)
    assert path.endswith(f"shards/{digest[:2]}/{digest}/v%3A123.json")
    got = env.store.get_profile(p.url, "v:123")
    assert got is not None and got.to_dict() == p.to_dict()
    assert env.store.has_profile(p.url, "v:123")
    assert not env.store.has_profile(p.url, "v:124")


def test_missing_profile_is_none(env: Env) -> None:
    env.store.put_profile(small_profile(f"{env.data}/a.tar", "v:1"))
    assert env.store.get_profile(f"{env.data}/a.tar", "v:2") is None
    assert env.store.get_profile(f"{env.data}/b.tar", "v:1") is None


def test_unversioned_profile_round_trip(env: Env) -> None:
    p = small_profile(f"{env.data}/a.tar", None)
    assert env.store.profile_path(p.url, None).endswith(f"{version_name(None)}.json")
    env.store.put_profile(p)
    assert env.store.get_profile(p.url, None).n == p.n


def test_corrupt_profile_warns_and_returns_none(env: Env) -> None:
    url = f"{env.data}/a.tar"
    path = env.store.put_profile(small_profile(url, "v:1"))
    env.store.write_bytes(path, b'{"format": 1, "n": ')  # truncated JSON
    with pytest.warns(RuntimeWarning, match="corrupt profile .*v%3A1.json"):
        assert env.store.get_profile(url, "v:1") is None


def test_credentials_never_land_in_the_store(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "drift"))
    url = "https://user:secret@example.com/data/a.tar"
    store.put_profile(small_profile(url, "e:abc"))
    assert url_hash(url) == url_hash("https://***@example.com/data/a.tar")
    for path in (tmp_path / "drift").rglob("*.json"):
        assert "secret" not in path.read_text()
    assert store.get_profile(url, "e:abc").url == "https://***@example.com/data/a.tar"


def test_local_paths_are_keyed_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shard_key("data/a.tar") == str(tmp_path / "data" / "a.tar")
    assert shard_key(f"file://{tmp_path}/data/a.tar") == str(tmp_path / "data" / "a.tar")
    store = ProfileStore("drift")
    store.put_profile(small_profile("data/a.tar", "s:1"))
    assert store.get_profile(str(tmp_path / "data" / "a.tar"), "s:1") is not None
    assert (tmp_path / "drift" / "shards").is_dir()


def test_put_profile_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard url"):
        ProfileStore(str(tmp_path)).put_profile(small_profile(None, "v:1"))  # type: ignore[arg-type]


def test_local_files_are_not_private(tmp_path: Path) -> None:
    path = ProfileStore(str(tmp_path)).put_profile(small_profile("/d/a.tar", "v:1"))
    assert os.stat(path).st_mode & 0o044  # readable by group/others under a normal umask


# -- references ------------------------------------------------------------------------------


def test_reference_round_trip(env: Env) -> None:
    p = small_profile(f"{env.data}/a.tar", "v:1")
    path = env.store.put_reference("v1", p)
    assert path.endswith("references/v1.json")
    assert env.store.get_reference("v1").to_dict() == p.to_dict()
    env.store.put_reference("v2.small-1", p)
    assert env.store.references() == ["v1", "v2.small-1"]


def test_reference_not_found_names_the_store(env: Env) -> None:
    with pytest.raises(ReferenceNotFound) as info:
        env.store.get_reference("nope")
    message = str(info.value)
    assert "'nope'" in message and env.store.url in message and "driftloader reference" in message
    assert isinstance(info.value, LookupError)
    assert env.store.references() == []


def test_corrupt_reference_names_its_path(env: Env) -> None:
    path = env.store.put_reference("v1", small_profile("/d/a.tar", "v:1"))
    env.store.write_bytes(path, b"[1, 2")
    with pytest.raises(ProfileFormatError, match="references/v1.json"):
        env.store.get_reference("v1")


@pytest.mark.parametrize("name", ["", "a/b", "../x", "a b", "..", "v1\n"])
def test_bad_reference_names(tmp_path: Path, name: str) -> None:
    store = ProfileStore(str(tmp_path))
    with pytest.raises(ValueError, match="reference name"):
        store.put_reference(name, small_profile("/d/a.tar", "v:1"))
    with pytest.raises(ValueError, match="reference name"):
        store.get_reference(name)


def test_build_reference_merges_shard_profiles(env: Env) -> None:
    urls = [env.put_shard(f"s-{i}.tar", 12, seed=i) for i in range(3)]
    shards = [stat_shard(Shard(u)) for u in urls]
    profiles = [profile_shard(s, env.store, config=CONFIG) for s in shards]
    ref = env.store.build_reference("v1", urls)
    expected = Profile.merged(profiles)
    assert ref.n == expected.n == 36
    m_ref, _ = ref.numeric("x.npy[0]")
    m_exp, _ = expected.numeric("x.npy[0]")
    assert m_ref.mean == pytest.approx(m_exp.mean, rel=1e-12)
    assert m_ref.var == pytest.approx(m_exp.var, rel=1e-12)
    assert ref.categorical("cls").counts() == expected.categorical("cls").counts()
    assert ref.meta["count"] == 3
    assert [s["version"] for s in ref.meta["shards"]] == [s.version for s in shards]
    stored = env.store.get_reference("v1")
    assert stored.n == 36 and stored.meta == ref.meta


def test_build_reference_with_an_unprofiled_shard(env: Env) -> None:
    urls = [env.put_shard(f"s-{i}.tar", 8, seed=i) for i in range(3)]
    for url in urls[:2]:
        profile_shard(stat_shard(Shard(url)), env.store, config=CONFIG)
    with pytest.raises(MissingProfiles) as info:
        env.store.build_reference("v1", urls)
    message = str(info.value)
    assert "s-2.tar" in message and "s-0.tar" not in message
    assert "driftloader profile" in message and "1 of 3" in message
    assert isinstance(info.value, DriftloaderError) and isinstance(info.value, LookupError)
    assert [u for u, _ in info.value.shards] == [urls[2]]
    assert env.store.references() == []


def test_missing_profiles_lists_at_most_ten(tmp_path: Path) -> None:
    for i in range(12):
        write_shard(tmp_path / f"s-{i:02d}.tar", 1, seed=i)
    with pytest.raises(MissingProfiles) as info:
        ProfileStore(str(tmp_path / "drift")).build_reference("v1", str(tmp_path / "s-*.tar"))
    message = str(info.value)
    assert "s-09.tar" in message and "s-10.tar" not in message and "and 2 more" in message


# -- catalog ---------------------------------------------------------------------------------


def test_catalog_rows_have_summary_and_recorded_keys(env: Env) -> None:
    a, b = f"{env.data}/a.tar", f"{env.data}/b.tar"
    env.store.put_profile(small_profile(a, "v:1", n=30))
    env.store.put_profile(small_profile(b, "v:9", n=40))
    env.store.record(a, "v:1", {"drift": True, "score": 0.7, "reference": "v1"})
    env.store.record(a, "v:1", {"action": "skip", "score": float("nan")})
    rows = {r["url"]: r for r in env.store.catalog()}
    assert set(rows) == {a, b}
    assert rows[a]["version"] == "v:1" and rows[a]["n"] == 30
    assert rows[a]["drift"] is True and rows[a]["action"] == "skip"
    assert rows[a].reference == "v1" and rows[a].score is None  # NaN -> null
    assert rows[b]["n"] == 40 and "drift" not in rows[b]
    # a re-profiled shard keeps its recorded decisions
    env.store.put_profile(small_profile(a, "v:1", n=31))
    row = next(r for r in env.store.catalog() if r["url"] == a)
    assert row["n"] == 31 and row["action"] == "skip"


def test_record_without_profile_creates_a_row(env: Env) -> None:
    env.store.record(f"{env.data}/x.tar", None, {"action": "skip"})
    assert env.store.catalog() == [{"url": f"{env.data}/x.tar", "version": None, "action": "skip"}]


def test_overwritten_shard_gets_a_new_version_and_profile(env: Env) -> None:
    url = env.put_shard("s.tar", 10, seed=1)
    old = stat_shard(Shard(url))
    profile_shard(old, env.store, config=CONFIG)
    if env.fs is None:
        os.utime(url, (1, 1))  # local versions are size+mtime: make sure the mtime moves
    env.put_shard("s.tar", 14, seed=2, shift=3.0)
    new = stat_shard(Shard(url))
    assert new.version != old.version
    if env.fs is not None:
        assert new.version.startswith("v:") and old.version.startswith("v:")
    assert not env.store.has_profile(url, new.version)
    assert env.store.get_profile(url, new.version) is None
    with pytest.raises(MissingProfiles):
        env.store.build_reference("r", [url])
    profile_shard(new, env.store, config=CONFIG)
    assert env.store.get_profile(url, new.version).n == 14
    assert env.store.get_profile(url, old.version).n == 10
    assert env.store.build_reference("r", [url]).n == 14
    versions = sorted(r["version"] for r in env.store.catalog())
    assert versions == sorted([old.version, new.version])


# -- concurrency -----------------------------------------------------------------------------


def _write_many(store_url: str, base_json: str, n: int, seed: int) -> None:
    store = ProfileStore(store_url)
    base = Profile.from_json(base_json)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    for i in order:
        p = base.copy()
        p.url, p.version = f"/data/shard-{i:04d}.tar", f"s:{i}"
        store.put_profile(p)


def _concurrent_writes(store: ProfileStore, n: int) -> None:
    base = small_profile("/x", "v", n=20).to_json()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(store.url, base, n, s)) for s in range(4)]
    for proc in procs:
        proc.start()
    reads = 0
    while any(proc.is_alive() for proc in procs):  # readers must never see a half-written file
        i = reads % n
        raw = store.read_bytes(store.profile_path(f"/data/shard-{i:04d}.tar", f"s:{i}"))
        if raw is not None:
            assert Profile.from_json(raw).n == 20
        reads += 1
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    for i in range(n):
        p = store.get_profile(f"/data/shard-{i:04d}.tar", f"s:{i}")
        assert p is not None and p.n == 20
        raw = store.read_bytes(store.profile_path(p.url, p.version))
        assert Profile.from_json(raw).version == f"s:{i}"
    assert len(store.catalog()) == n


def test_concurrent_writers_local(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path / "drift"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no corrupt file may ever be seen
        _concurrent_writes(store, 100)
    files = [p for p in (tmp_path / "drift").rglob("*") if p.is_file()]
    assert all(p.suffix == ".json" and not p.name.startswith(".") for p in files)
    assert len(files) == 200  # 100 profiles + 100 catalog rows, no temp files left


def test_concurrent_writers_s3(s3_bucket: str) -> None:
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    _concurrent_writes(store, 25)
    fs = filesystem(store.url)
    fs.invalidate_cache()
    assert len(fs.find(store.root)) == 50


def test_failed_local_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ProfileStore(str(tmp_path))
    p = small_profile("/d/a.tar", "v:1")
    path = store.put_profile(p)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put_profile(small_profile("/d/a.tar", "v:1", n=99))
    monkeypatch.undo()
    assert store.get_profile("/d/a.tar", "v:1").n == p.n  # the old file is intact
    leftovers = [f for f in Path(path).parent.iterdir() if f.name != Path(path).name]
    assert leftovers == []


def test_store_json_is_plain_json(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path))
    path = store.put_profile(small_profile("/d/a.tar", "v:1"))
    data = json.loads(Path(path).read_text())
    assert data["url"] == "/d/a.tar" and data["version"] == "v:1"


def test_store_validates_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="store url"):
        ProfileStore("")
    with pytest.raises(ValueError, match="storage_options"):
        ProfileStore(str(tmp_path), storage_options="anon")  # type: ignore[arg-type]


def test_a_mistyped_store_is_named_before_any_shard_is_read(tmp_path: Path, s3_bucket: str):
    from driftloader.profiling import profile_shards

    shard = tmp_path / "a.tar"
    write_shard(shard, 5)
    missing = ProfileStore(f"s3://{s3_bucket}-typo/drift")
    with pytest.raises(ValueError, match=f"bucket '{s3_bucket}-typo' does not exist"):
        profile_shards([str(shard)], missing, progress=False)
    for under_a_file in (str(shard), str(shard / "sub" / "store")):
        with pytest.raises(ValueError, match="is a file, not a folder"):
            profile_shards([str(shard)], under_a_file, progress=False)  # a URL is enough
    ProfileStore(f"s3://{s3_bucket}/drift").check_writable()  # an existing bucket passes


# -- corrupt and hostile store files -----------------------------------------------------------

CORRUPT = {
    "truncated": b'{"format":1,"fingerprint":"fp","n":',
    "empty": b"",
    "not-json": b"\x00\xffnot json at all",
    "null": b"null",
    "other-format": b'{"format":99,"n":3}',
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("damage", sorted(CORRUPT))
def test_a_corrupt_profile_warns_naming_it_and_counts_as_absent(env: Env, damage: str) -> None:
    url = f"{env.data}/a.tar"
    path = env.store.put_profile(small_profile(url, "v:1"))
    env.store.write_bytes(path, CORRUPT[damage])
    with pytest.warns(RuntimeWarning, match="corrupt profile .*v%3A1.json"):
        assert env.store.get_profile(url, "v:1") is None
    with pytest.warns(RuntimeWarning, match="corrupt profile .*v%3A1.json"):
        assert not env.store.has_profile(url, "v:1")  # so profile_shards profiles it again


def test_every_store_read_refuses_deep_nesting_as_a_format_error(tmp_path: Path) -> None:
    from driftloader.validate import load_rules, rules_path
    from driftloader.versions import exclusions_path, load_exclusions

    store = ProfileStore(str(tmp_path))
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    store.write_bytes(store.reference_path("r"), deep)
    with pytest.raises(ProfileFormatError, match=r"reference 'r' .* nests 5000 levels"):
        store.get_reference("r")
    store.write_bytes(rules_path(store, "r"), deep)
    with pytest.raises(ProfileFormatError, match="nests 5000 levels"):
        load_rules(store, "r")
    store.write_bytes(exclusions_path(store, "r"), deep)
    with pytest.raises(ProfileFormatError, match="nests 5000 levels"):
        load_exclusions(store, "r")
    store.write_bytes(store.catalog_path("/d/a.tar", "v"), deep)
    with pytest.warns(RuntimeWarning, match="corrupt catalog row .*nests 5000 levels"):
        assert store.catalog() == []
    store.write_bytes(store.probe_path("/d/a.tar", "v"), deep)
    with pytest.warns(RuntimeWarning, match="nests 5000 levels"):
        assert store.get_probe("/d/a.tar", "v") is None


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    store = ProfileStore(str(tmp_path))
    document = {"text": "[" * 1000 + '\\"{' * 500, "deep": [[[[1]]]]}
    store.write_json(store.path("x.json"), document)
    assert store.read_json(store.path("x.json")) == document


def test_store_files_beyond_the_size_bound_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import driftloader.store_files as store_module

    store = ProfileStore(str(tmp_path))
    store.write_json(store.path("big.json"), {"x": "y" * 2000})
    monkeypatch.setattr(store_module, "MAX_JSON_BYTES", 1000)
    with pytest.raises(ProfileFormatError, match=r"big.json is 1,001 bytes, more than the 1,000"):
        store.read_json(store.path("big.json"))


# -- stalls ------------------------------------------------------------------------------------


@pytest.fixture
def stalling_endpoint():
    """An HTTP endpoint on loopback that accepts connections and never answers."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_stalled_store_gives_up_within_its_timeout(stalling_endpoint: str) -> None:
    import time

    from driftloader.errors import StoreTimeoutError

    options = {"client_kwargs": {"endpoint_url": stalling_endpoint}, "key": "k", "secret": "s"}
    store = ProfileStore("s3://stalled/drift", options, timeout=1.0)
    operations = {
        "PUT": lambda: store.write_json(store.path("x.json"), {"a": 1}),
        "HEAD": lambda: store.exists(store.path("x.json")),
        "GET": lambda: store.get_profile("/d/a.tar", "v:1"),
        "LIST": store.catalog,
        "HEAD bucket": store.check_writable,
    }
    for name, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError, match=r"s3://stalled/drift: .* within 1 s"):
            operation()
        # a hang guard, not a timing: without the deadline this took about 7 minutes; the
        # first call also sets up the S3 client, which takes seconds on a loaded machine
        assert time.monotonic() - started < 30, name


def test_s3_stores_get_bounded_timeouts_unless_the_caller_sets_them() -> None:
    from driftloader.store_files import S3_STORE_OPTIONS, store_options

    assert store_options("/local/store", None) == {}
    defaults = store_options("s3://b/drift", {"anon": True})
    assert defaults["anon"] is True
    assert defaults["config_kwargs"] == S3_STORE_OPTIONS["config_kwargs"]
    assert defaults["config_kwargs"]["connect_timeout"] <= 10
    assert defaults["config_kwargs"]["read_timeout"] <= 30
    mine = store_options("s3://b/drift", {"config_kwargs": {"read_timeout": 3}})
    assert mine["config_kwargs"]["read_timeout"] == 3
    assert (
        mine["config_kwargs"]["connect_timeout"]
        == S3_STORE_OPTIONS["config_kwargs"]["connect_timeout"]
    )
    assert ProfileStore("s3://b/drift").fs.config_kwargs["read_timeout"] == 20  # reaches s3fs
    with pytest.raises(ValueError, match="timeout"):
        ProfileStore("s3://b/drift", timeout=0)


def test_a_stored_profile_of_an_older_format_still_counts_as_profiled(tmp_path: Path) -> None:
    old = json.loads((Path(__file__).parent / "data" / "profile_format1.json").read_text())
    assert old["format"] == 1
    store = ProfileStore(str(tmp_path))
    store.write_json(store.profile_path("/d/a.tar", "v:1"), old)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert store.has_profile("/d/a.tar", "v:1")
        assert store.get_profile("/d/a.tar", "v:1") is not None


def test_a_reference_is_merged_chunk_by_chunk_reading_each_profile_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = [env.put_shard(f"s-{i}.tar", 6, seed=i) for i in range(5)]
    shards = [stat_shard(Shard(u)) for u in urls]
    profiles = [profile_shard(s, env.store, config=CONFIG) for s in shards]
    fresh = ProfileStore(env.store.url, env.store.storage_options)
    chunks = list(fresh.fetch_profile_chunks(shards, size=2))
    assert [len(c) for c in chunks] == [2, 2, 1] and fresh.reads == 5  # each read once
    monkeypatch.setattr(reference_build, "PACK_SHARDS", 2)
    fresh.reads = fresh.batches = 0
    ref = fresh.build_reference("v1", urls)
    assert fresh.reads == 5 and fresh.batches == 3  # three chunks, one batched read each
    expected = Profile.merged(profiles)
    assert ref.n == expected.n == 30 and ref.meta["count"] == 5
    assert ref.numeric("x.npy[0]")[0].mean == pytest.approx(expected.numeric("x.npy[0]")[0].mean)
    assert ref.categorical("cls").counts() == expected.categorical("cls").counts()
    env.store.fs.rm(env.store.profile_path(shards[3].url, shards[3].version))
    with pytest.raises(MissingProfiles, match="s-3.tar"):  # found in the second chunk
        ProfileStore(env.store.url, env.store.storage_options).build_reference("v1", urls)


def test_store_listings_see_only_the_latest_objects_on_a_versioned_bucket(
    s3_proxy, s3_bucket: str
) -> None:
    """A row rewritten every epoch is one object to list, not one per version ever written:
    the store lists with ListObjectsV2, never ListObjectVersions."""
    from driftloader.catalog import CatalogRow

    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)  # the bucket keeps versions
    for epoch in range(3):
        store.record(CatalogRow(f"s3://{s3_bucket}/data/a.tar", "v:1", epoch=epoch))
    s3_proxy.reset_stats()
    assert len(store.list_json(store.path("catalog"))) == 1
    (row,) = store.catalog()
    assert row.epoch == 2
    listings = [r.target for r in s3_proxy.requests if "prefix=" in r.target]
    assert listings and not any("versions" in t for t in listings)
