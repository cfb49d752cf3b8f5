"""check_shards and profile_shards against damaged, read-only and empty inputs: a corrupt
stored profile is profiled again, a read-only store never fails a check, an empty shard is a
data error in profile and check alike."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from driftloader.check import check_shards
from driftloader.cli import main
from driftloader.errors import EmptyShardError, ReferenceNotFound
from driftloader.profiling import profile_shards
from driftloader.sources import Shard, stat_shard
from driftloader.store import ProfileStore

from .conftest import write_shard

pytestmark = pytest.mark.filterwarnings("ignore:field 'bin' has no default featurizer")


@pytest.fixture
def corpus(tmp_path: Path) -> dict:
    data = tmp_path / "data"
    data.mkdir()
    ref = [str(data / f"ref-{i}.tar") for i in range(2)]
    for i, path in enumerate(ref):
        write_shard(path, 80, seed=i, start=i * 1000)
    new = str(data / "new.tar")
    write_shard(new, 60, seed=7, start=7000)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards([*ref, new], store, progress=False)
    store.build_reference("ref", ref)
    return {"store": store, "ref": ref, "new": new, "tmp": tmp_path}


def _damage(store: ProfileStore, url: str, data: bytes) -> str:
    shard = stat_shard(Shard(url))
    path = store.profile_path(url, shard.version)
    store.write_bytes(path, data)
    return path


@pytest.mark.parametrize("damage", [b'{"format":1,"n":', b"", b"null", b"[1,2]", b"{]"])
def test_a_corrupt_profile_is_profiled_again_by_check_profile_and_reference(corpus, damage):
    store, new = corpus["store"], corpus["new"]
    _damage(store, new, damage)
    with pytest.warns(RuntimeWarning, match=r"corrupt profile .*\.json"):
        (result,) = check_shards(new, store, "ref")
    assert result.n == 60
    assert store.get_profile(new, stat_shard(Shard(new)).version).n == 60  # repaired in the store
    _damage(store, corpus["ref"][0], damage)
    with pytest.warns(RuntimeWarning, match=r"corrupt profile .*\.json"):
        summary = profile_shards(corpus["ref"], store, progress=False)
    assert (summary.profiled, summary.skipped) == (1, 1)
    assert store.build_reference("ref", corpus["ref"]).n == 160


def test_a_profile_corrupt_inside_its_sketches_is_profiled_again_by_check(corpus):
    store, new = corpus["store"], corpus["new"]
    path = store.profile_path(new, stat_shard(Shard(new)).version)
    document = store.read_json(path)
    document["features"] = {"x": {"kind": "no-such-sketch"}}  # valid JSON, bad content
    store.write_json(path, document)
    with pytest.warns(RuntimeWarning, match="corrupt profile"):
        (result,) = check_shards(new, store, "ref")
    assert result.n == 60 and store.get_profile(new, stat_shard(Shard(new)).version).n == 60


def test_check_cli_on_a_corrupt_profile_exits_by_the_comparison(corpus, capsys):
    store = corpus["store"]
    _damage(store, corpus["new"], b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        code = main(["check", corpus["new"], "--store", store.url, "--reference", "ref"])
    assert code == 0, capsys.readouterr()


# -- read-only stores -------------------------------------------------------------------------


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[None]:
    """Make ``folder`` and everything under it refuse writes, even to root (``chattr +i``)."""
    paths = [str(p) for p in sorted(folder.rglob("*"), reverse=True)] + [str(folder)]
    try:
        subprocess.run(["chattr", "+i", *paths], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot make a read-only folder here (chattr: {e})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *paths], check=False, capture_output=True)


def _files(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*")}


def test_check_on_a_store_opened_read_only_compares_in_memory(corpus):
    unprofiled = str(corpus["tmp"] / "data" / "unprofiled.tar")
    write_shard(unprofiled, 50, seed=9, start=9000)
    before = _files(corpus["tmp"] / "store")
    store = ProfileStore(corpus["store"].url, read_only=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*read-only")  # asked for: no warning
        results = check_shards([corpus["new"], unprofiled], store, "ref", workers=2)
    assert [r.n for r in results] == [60, 50] and results.failed == []
    assert _files(corpus["tmp"] / "store") == before  # nothing written


def test_a_store_that_refuses_writes_warns_once_and_check_exits_by_the_comparison(corpus, capsys):
    unprofiled = str(corpus["tmp"] / "data" / "unprofiled.tar")
    write_shard(unprofiled, 50, seed=9, start=9000)
    store_dir = corpus["tmp"] / "store"
    with immutable(store_dir):
        store = ProfileStore(str(store_dir))
        with pytest.warns(RuntimeWarning, match="read-only") as caught:
            results = check_shards([corpus["new"], unprofiled], store, "ref")
        assert [r.n for r in results] == [60, 50]
        assert sum("read-only" in str(w.message) for w in caught) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            code = main(["check", corpus["new"], "--store", str(store_dir), "--reference", "ref"])
        assert code == 0, capsys.readouterr()
        assert main(["profile", unprofiled, "--store", str(store_dir), "--quiet"]) == 2


def test_training_on_a_read_only_store_keeps_decisions_in_memory(corpus):
    import driftloader as dl

    unprofiled = str(corpus["tmp"] / "data" / "unprofiled.tar")
    write_shard(unprofiled, 50, seed=9, start=9000, shift=2.0)
    urls = [corpus["new"], unprofiled]
    read_only = ProfileStore(corpus["store"].url, read_only=True)
    before = _files(corpus["tmp"] / "store")
    ds = dl.DriftDataset(urls, store=read_only, reference="ref", policy="skip")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*read-only")  # asked for: no warning
        assert len(list(ds)) == 60
    assert {Path(r["url"]).name: r["action"] for r in ds.drift_report()} == {
        "new.tar": "passed",
        "unprofiled.tar": "dropped after probe",
    }
    assert _files(corpus["tmp"] / "store") == before
    with immutable(corpus["tmp"] / "store"):
        ds = dl.DriftDataset(urls, store=ProfileStore(corpus["store"].url), reference="ref")
        with pytest.warns(RuntimeWarning, match="read-only") as caught:
            assert len(list(ds)) == 110
        assert sum("read-only" in str(w.message) for w in caught) == 1
        assert len(ds.drift_report()) == 2


# -- empty shards ------------------------------------------------------------------------------


def test_an_empty_shard_is_a_data_error_in_profile_and_check(corpus, capsys):
    empty = corpus["tmp"] / "data" / "empty.tar"
    tarfile.open(empty, "w").close()
    store = corpus["store"]
    summary = profile_shards([str(empty)], store, progress=False, on_error="skip")
    assert summary.failed == [
        (str(empty), "shard has no samples (an empty tar): nothing to profile")
    ]
    assert store.get_profile(str(empty), stat_shard(Shard(str(empty))).version) is None
    with pytest.raises(EmptyShardError, match="empty.tar: shard has no samples"):
        profile_shards([str(empty)], store, progress=False)
    with pytest.raises(EmptyShardError, match="empty.tar: shard has no samples"):
        check_shards(str(empty), store, "ref")
    results = check_shards([str(empty), corpus["new"]], store, "ref", on_error="skip")
    assert len(results) == 1 and results.failed[0][0] == str(empty)
    assert main(["profile", str(empty), "--store", store.url, "--quiet"]) == 2
    assert main(["check", str(empty), "--store", store.url, "--reference", "ref"]) == 2
    assert "shard has no samples" in capsys.readouterr().err


def test_an_s3_store_that_refuses_puts_warns_once_and_check_still_compares(
    tmp_path, s3_proxy, s3_bucket
):
    data = tmp_path / "data"
    data.mkdir()
    ref, new = str(data / "ref.tar"), str(data / "new.tar")
    write_shard(ref, 80, seed=1, start=1000)
    write_shard(new, 60, seed=7, start=7000)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    profile_shards([ref], store, progress=False)
    store.build_reference("ref", [ref])
    s3_proxy.add_fault("status", method="PUT", status=403, times=None)  # AccessDenied
    refusing = ProfileStore(f"s3://{s3_bucket}/drift", options)
    with pytest.warns(RuntimeWarning, match="read-only") as caught:
        results = check_shards([new, ref], refusing, "ref", storage_options={})
    assert [r.n for r in results] == [60, 80] and results.failed == []
    assert sum("read-only" in str(w.message) for w in caught) == 1
    assert not refusing.writable


def test_check_reads_each_stored_profile_once(tmp_path, s3_proxy, s3_bucket):
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    urls = [str(tmp_path / f"s-{i}.tar") for i in range(6)]
    for i, url in enumerate(urls):
        write_shard(url, 20, seed=i)
    profile_shards(urls[:5], store, progress=False)
    store.build_reference("ref", urls[:2])
    s3_proxy.reset_stats()
    results = check_shards(urls, store, "ref")  # 5 stored profiles, 1 profiled now
    assert len(results) == 6 and not results.failed
    gets = Counter(unquote(r.target.split("?")[0]) for r in s3_proxy.requests if r.method == "GET")
    stored = [store.profile_path(u, stat_shard(Shard(u)).version) for u in urls[:5]]
    assert [gets[f"/{p}"] for p in stored] == [1] * 5  # one (batched) read each


def test_check_records_many_shards_at_once(tmp_path, s3_proxy, s3_bucket):
    """Each checked shard costs three small requests (its catalog row read and written, its
    decision record written): at 100 ms a request they are made for many shards at once, not
    one after the other (two writes start closer together than one round trip), and every
    shard ends with its row and its decision."""
    from driftloader.decisions import DecisionIndex
    from driftloader.store import shard_key

    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{s3_bucket}/drift", options)
    urls = [str(tmp_path / f"s-{i}.tar") for i in range(8)]
    for i, url in enumerate(urls):
        write_shard(url, 10, seed=i)
    profile_shards(urls, store, progress=False)
    store.build_reference("ref", urls[:2])
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 100
    results = check_shards(urls, store, "ref")
    s3_proxy.latency_ms = 0
    assert len(results) == 8 and not results.failed
    puts = sorted(r.started for r in s3_proxy.requests if r.method == "PUT")
    assert len(puts) >= 16  # a catalog row and a decision record per shard
    assert min(b - a for a, b in zip(puts, puts[1:])) < 0.05
    rows = {shard_key(r.url): r for r in store.catalog()}
    assert all(rows[shard_key(u)].action == "checked" for u in urls)
    index = DecisionIndex.of(store, "ref", store.get_reference("ref"), None)
    assert len(index.load_all()) == 8


@pytest.fixture
def many(tmp_path: Path) -> dict:
    urls = [str(tmp_path / f"s-{i:02d}.tar") for i in range(20)]
    for i, url in enumerate(urls):
        write_shard(url, 10, seed=i)
    store = ProfileStore(str(tmp_path / "store"))
    profile_shards(urls, store, progress=False)
    store.build_reference("ref", urls[:2])
    return {"urls": urls, "store": store}


def _alive_at_each_compare(
    monkeypatch, kind: type, fail_at: int | None = None, error: BaseException | None = None
) -> list[int]:
    """How many more objects of ``kind`` than before are alive at each comparison of a check
    (``fail_at``: the comparison that raises ``error``, an ``OSError`` unless given)."""
    import gc

    import driftloader.check as check

    def count() -> int:
        gc.collect()
        return sum(isinstance(o, kind) for o in gc.get_objects())

    alive: list[int] = []
    compare, before = check.compare, count()  # what earlier tests left alive

    def counted(profile, reference, config):
        if len(alive) == fail_at:
            raise error or OSError("the store went away")
        alive.append(count() - before)
        return compare(profile, reference, config)

    monkeypatch.setattr(check, "compare", counted)
    return alive


def test_check_holds_a_few_chunks_of_profiles_not_all_of_them(many, monkeypatch):
    """check_shards compares each stored profile as its chunk is read, and lets it go: at 10k
    tiny shards holding them all took 1.1 GB. With chunks of 2, at most a few chunks' profiles
    (and the reference) are alive at any comparison, of 20 shards."""
    import driftloader.check as check
    from driftloader.profile import Profile

    monkeypatch.setattr(check, "CHECK_CHUNK", 2)
    alive = _alive_at_each_compare(monkeypatch, Profile)
    results = check.check_shards(many["urls"], many["store"], "ref", record=False)
    assert len(results) == 20 and len(alive) == 20
    assert max(alive) <= 8  # the reference, this chunk, the next one read ahead, one more


def test_check_without_details_keeps_every_summary_and_no_test_detail(corpus, capsys):
    """``details=False`` (what the CLI asks for) gives the same results as printed, with no
    feature's per-test detail: those held ~35 KB a shard, 3.5 GB over a 100k-shard check."""
    urls = [*corpus["ref"], corpus["new"]]
    full = check_shards(urls, corpus["store"], "ref")
    lean = check_shards(urls, corpus["store"], "ref", details=False)
    assert [r.to_dict() for r in lean] == [r.to_dict() for r in full]
    assert any(f.detail for r in full for f in r.features)
    assert not any(f.detail for r in lean for f in r.features)
    assert main(["check", *urls, "--store", corpus["store"].url, "--reference", "ref"]) == 0
    assert "0 of 3 shards drifted" in capsys.readouterr().out


def test_the_cli_check_prints_each_result_and_holds_none(many, monkeypatch, capsys):
    """``driftloader check`` streams: each shard is printed as it is compared, and results are
    let go (a 100k-shard check held 1.8 GB of them, a million would take ~18 GB). Of 20
    shards, a few results are alive at any comparison, not all those before it."""
    import driftloader.writebehind as writebehind
    from driftloader.drift import ShardDrift

    monkeypatch.setattr(writebehind, "RECORD_THREADS", 1)  # at most 4 results wait to be recorded
    alive = _alive_at_each_compare(monkeypatch, ShardDrift)
    code = main(["check", *many["urls"], "--store", many["store"].url, "--reference", "ref"])
    out = capsys.readouterr().out.splitlines()
    assert code in (0, 1) and len(alive) == 20
    assert max(alive) <= 8, alive
    assert [line.split()[-1] for line in out[:20] if "score" in line] == many["urls"]
    assert out[-1].endswith("of 20 shards drifted from reference 'ref'")
    rows = {r.url: r for r in many["store"].catalog()}
    assert all(rows[u].action == "checked" for u in many["urls"])  # each recorded all the same


def test_check_json_that_fails_midway_is_still_one_object_naming_the_failure(
    many, monkeypatch, capsys
):
    from driftloader.drift import ShardDrift

    _alive_at_each_compare(monkeypatch, ShardDrift, fail_at=3)
    args = ["check", *many["urls"], "--store", many["store"].url, "--reference", "ref"]
    assert main([*args, "--json"]) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [s["url"] for s in report["shards"]] == many["urls"][:3]
    assert report["errors"] == [{"url": None, "error": "the store went away"}]
    assert "the store went away" in err


def test_iter_checks_yields_as_it_goes_and_records_what_was_yielded(many):
    from driftloader.check import iter_checks

    store, urls = many["store"], many["urls"]
    with pytest.raises(ReferenceNotFound, match="no reference .nope."):
        iter_checks(urls, store, "nope")  # before any result, not at the first
    with iter_checks(urls, store, "ref", details=False) as run:
        assert len(run) == 20
        got = []
        for result in run:
            got.append(result.url)
            if len(got) == 5:
                break
    assert got == urls[:5]
    checked = {r.url for r in store.catalog() if r.action == "checked"}
    assert checked == set(urls[:5])  # recorded when the loop was left, and no more
    with pytest.raises(RuntimeError, match="iterated once"):
        next(iter(run))
    whole = iter_checks(urls, store, "ref")
    assert [r.to_dict() for r in whole] == [r.to_dict() for r in check_shards(urls, store, "ref")]


def test_check_json_interrupted_midway_is_still_one_object(many, monkeypatch, capsys):
    from driftloader.drift import ShardDrift

    _alive_at_each_compare(monkeypatch, ShardDrift, fail_at=2, error=KeyboardInterrupt())
    args = ["check", *many["urls"], "--store", many["store"].url, "--reference", "ref"]
    assert main([*args, "--json"]) == 130
    report = json.loads(capsys.readouterr().out)
    assert [s["url"] for s in report["shards"]] == many["urls"][:2]
    assert report["errors"] == [{"url": None, "error": "interrupted"}]
    checked = {r.url for r in many["store"].catalog() if r.action == "checked"}
    assert checked == set(many["urls"][:2])  # what was printed is recorded
