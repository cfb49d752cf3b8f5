"""URL expansion, manifests and shard versions, locally and on the moto S3 server."""

from __future__ import annotations

import json

import pytest

from driftloader.errors import NoShardsError, ShardReadError, VersionMismatch
from driftloader.shardversion import ShardVersion, version_id_of
from driftloader.sources import (
    Shard,
    braceexpand,
    expand_urls,
    redact,
    shard_version,
    split_url_list,
    stat_shard,
    stat_shards,
)

from .conftest import write_shard


def test_braceexpand_ranges_keep_zero_padding():
    assert braceexpand("s-{000008..000011}.tar") == [f"s-{i:06d}.tar" for i in range(8, 12)]


def test_braceexpand_alternatives_and_nesting():
    assert braceexpand("{a,b{1..2}}/x.tar") == ["a/x.tar", "b1/x.tar", "b2/x.tar"]
    assert braceexpand("plain.tar") == ["plain.tar"]


def test_braceexpand_unbalanced_raises():
    with pytest.raises(ValueError, match="unbalanced"):
        braceexpand("s-{1..2.tar")


def test_glob_and_braces_on_local_files(local_shards, tmp_path):
    globbed = [s.url for s in expand_urls(str(tmp_path / "shard-*.tar"))]
    braced = [s.url for s in expand_urls(str(tmp_path / "shard-{000000..000003}.tar"))]
    assert globbed == braced == local_shards


def test_empty_glob_names_the_pattern(tmp_path):
    with pytest.raises(NoShardsError, match="nothing-"):
        expand_urls(str(tmp_path / "nothing-*.tar"))


def test_text_and_json_manifests_resolve_relative_urls(local_shards, tmp_path):
    (tmp_path / "list.txt").write_text("# shards\nshard-000000.tar\n\nshard-000001.tar\n")
    (tmp_path / "list.json").write_text(
        json.dumps({"shards": [{"url": "shard-000002.tar", "version": "e:abc", "size": 1}]})
    )
    txt = expand_urls(str(tmp_path / "list.txt"))
    assert [s.url for s in txt] == local_shards[:2]
    (pinned,) = expand_urls(str(tmp_path / "list.json"))
    assert pinned == Shard(local_shards[2], "e:abc", 1, pinned=True)


def test_local_version_changes_when_file_changes(tmp_path):
    path = tmp_path / "a.tar"
    write_shard(path, 3, seed=1)
    before = stat_shard(Shard(str(path)))
    write_shard(path, 5, seed=2)
    after = stat_shard(Shard(str(path)))
    assert before.version != after.version and after.size == path.stat().st_size


def test_local_shards_are_globbed_and_stat_without_an_fsspec_info_each(tmp_path, monkeypatch):
    """A glob over a local folder is one ``os.scandir`` and each shard one ``os.stat`` (100k
    shards: no fsspec ``info()`` per entry), giving what fsspec's glob and ``info`` give."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    for name in ("a.tar", ".hidden.tar", "b.tar", "c.txt", "x[1].tar"):
        write_shard(tmp_path / name, 2, seed=len(name))
    (tmp_path / "dir.tar").mkdir()
    pattern = str(tmp_path / "*.tar")
    globbed = sorted(fsspec.filesystem("file").glob(pattern))
    files = [u for u in globbed if not u.endswith("dir.tar")]
    expected = [stat_shard(Shard(u)) for u in files] + [stat_shard(Shard(f"file://{files[0]}"))]

    def no_info(*args, **kwargs):
        raise AssertionError("fsspec info() called for a local shard")

    monkeypatch.setattr(LocalFileSystem, "info", no_info)
    assert [s.url for s in expand_urls(pattern)] == globbed  # folders too, as fsspec's glob
    assert [s.url for s in expand_urls(str(tmp_path / "[ab].tar"))] == globbed[1:3]
    assert stat_shards([Shard(u) for u in files] + [Shard(f"file://{files[0]}")]) == expected


def test_missing_local_shard_names_url(tmp_path):
    with pytest.raises(ShardReadError, match="missing.tar"):
        stat_shard(Shard(str(tmp_path / "missing.tar")))


def test_version_precedence():
    assert shard_version({"VersionId": "abc", "ETag": '"e"'}) == "v:abc"
    assert shard_version({"VersionId": "null", "ETag": '"e"'}) == "e:e"
    assert shard_version({"size": 3, "mtime": 1.5}) == "s:3-1.5"


@pytest.mark.parametrize("text", ["v:3HL4kqtJ", "e:9b2cf535f27731c974343645a3985328", "s:3-1.5"])
def test_shard_version_text_round_trips(text):
    version = ShardVersion.parse(text)
    assert str(version) == text and ShardVersion.parse(str(version)) == version
    assert Shard("x.tar", text).parsed_version == version


def test_shard_version_parts_and_bad_text():
    assert ShardVersion.parse("v:abc").version_id == "abc"
    assert ShardVersion.parse("v:abc").etag is None
    assert ShardVersion.parse("e:x:y").etag == "x:y"  # only the first colon separates
    assert version_id_of("e:abc") is None and version_id_of(None) is None
    assert ShardVersion.parse(None) is None
    with pytest.raises(ValueError, match="not a shard version.*'q:1'"):
        ShardVersion.parse("q:1")


def test_redact_strips_credentials():
    assert redact("https://user:secret@host/x.tar") == "https://***@host/x.tar"


def test_s3_brace_glob_and_versions(s3_bucket, s3fs_fresh, tmp_path):
    for i in range(3):
        write_shard(tmp_path / f"s{i}.tar", 4, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s{i}.tar"), f"{s3_bucket}/data/shard-{i:06d}.tar")
    braced = expand_urls(f"s3://{s3_bucket}/data/shard-{{000000..000002}}.tar")
    globbed = expand_urls(f"s3://{s3_bucket}/data/shard-*.tar")
    assert [s.url for s in braced] == [s.url for s in globbed]
    first = stat_shards(braced)
    assert all(s.version and s.version.startswith("v:") for s in first)
    write_shard(tmp_path / "new.tar", 6, seed=9)
    s3fs_fresh.put(str(tmp_path / "new.tar"), f"{s3_bucket}/data/shard-000001.tar")
    second = stat_shards(braced)
    assert first[0].version == second[0].version
    assert first[1].version != second[1].version


def test_s3_missing_bucket_is_clear(s3_env):
    with pytest.raises(ShardReadError, match="no-such-bucket"):
        stat_shard(Shard("s3://no-such-bucket-xyz/a.tar"))


def test_double_colon_url_lists_like_webdataset(local_shards, tmp_path):
    one = f"{tmp_path}/shard-000000.tar::{tmp_path}/shard-{{000002..000003}}.tar"
    expected = [local_shards[0], local_shards[2], local_shards[3]]
    assert [s.url for s in expand_urls(one)] == expected
    assert [s.url for s in expand_urls([one, local_shards[1]])] == expected + [local_shards[1]]
    assert split_url_list("simplecache::s3://b/x.tar") == ["simplecache::s3://b/x.tar"]
    with pytest.raises(ValueError, match="empty URL"):
        expand_urls(f"{local_shards[0]}::")


def test_a_refused_http_connection_is_not_reported_as_a_missing_shard():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/x.tar"
    with pytest.raises(ShardReadError, match=r"x\.tar: cannot stat shard.*cannot connect") as e:
        stat_shard(Shard(url))
    assert "does not exist" not in str(e.value)


def _new_bucket(endpoint: str, prefix: str, versioned: bool) -> str:
    """A new bucket on the moto server, versioned or never versioned; its name."""
    import uuid

    import boto3

    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    if versioned:
        status = {"Status": "Enabled"}
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=status)
    return bucket


def _listing_kind(target: str) -> str:
    """What a bucket request asks: its ``versioning``, object ``versions`` or ``objects``."""
    query = target.partition("?")[2]
    return next((k for k in ("versioning", "versions") if k in query.split("&")), "objects")


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_s3_shards_are_stat_from_one_listing_as_a_head_would(
    s3_proxy, s3_env, s3fs_fresh, tmp_path, versioned
):
    """A brace over N shards: one listing request and no HEAD, and the same versions and
    sizes a HEAD per shard gives (an overwritten shard's latest version; a missing one still
    fails naming it). A bucket never versioned is listed with ListObjectsV2 (moto's
    ListObjectVersions takes time in proportion to the objects' bytes), asking its versioning
    at the same time; a versioned one lists versions, and is not asked again."""
    bucket = _new_bucket(s3_env, "list", versioned)
    for i in range(4):
        write_shard(tmp_path / f"s{i}.tar", 3 + i, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s{i}.tar"), f"{bucket}/s{i}.tar")
    s3fs_fresh.put(str(tmp_path / "s0.tar"), f"{bucket}/s1.tar")  # a second version of s1
    s3fs_fresh.put(str(tmp_path / "s0.tar"), f"{bucket}/other.tar")
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    shards = expand_urls(f"s3://{bucket}/s{{0..3}}.tar", options)
    s3_proxy.reset_stats()
    listed = stat_shards(shards, options)
    kinds = sorted(_listing_kind(r.target) for r in s3_proxy.requests)  # no HEAD
    assert kinds == (
        ["objects", "versioning", "versions"] if versioned else ["objects", "versioning"]
    )
    s3_proxy.reset_stats()
    assert stat_shards(shards, options) == listed
    kinds = sorted(_listing_kind(r.target) for r in s3_proxy.requests)
    assert kinds == (["versions"] if versioned else ["objects", "versioning"])
    headed = [stat_shard(s, options) for s in shards]
    assert listed == headed
    assert [s.version[:2] for s in listed] == (["v:"] * 4 if versioned else ["e:"] * 4)
    assert listed[1].size == listed[0].size
    with pytest.raises(ShardReadError, match=r"s9\.tar: shard does not exist"):
        stat_shards(shards + [Shard(f"s3://{bucket}/s9.tar")], options)


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_a_glob_lists_its_folder_once_for_names_versions_and_sizes(
    s3_proxy, s3_env, s3fs_fresh, tmp_path, versioned
):
    """``stat_shards(expand_urls(glob))``, as the dataset, the reference build and the CLI do:
    the names, versions and sizes come from one listing of the folder (with the bucket's
    versioning asked at the same time, and object versions listed when it is versioned), not
    from the glob's listing and a second one for the versions. The versions are those a HEAD
    gives (an overwritten shard's latest)."""
    bucket = _new_bucket(s3_env, "glob", versioned)
    for i in range(4):
        write_shard(tmp_path / f"s{i}.tar", 3 + i, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s{i}.tar"), f"{bucket}/d/s{i}.tar")
    s3fs_fresh.put(str(tmp_path / "s0.tar"), f"{bucket}/d/s1.tar")  # a second version of s1
    s3fs_fresh.put(str(tmp_path / "s0.tar"), f"{bucket}/d/sub/s9.tar")  # not directly in d/
    s3fs_fresh.put(str(tmp_path / "s0.tar"), f"{bucket}/d/other.tar")
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.reset_stats()
    shards = stat_shards(expand_urls(f"s3://{bucket}/d/s*.tar", options), options)
    kinds = sorted(_listing_kind(r.target) for r in s3_proxy.requests)  # no HEAD
    assert kinds == (
        ["objects", "versioning", "versions"] if versioned else ["objects", "versioning"]
    )
    assert [s.url for s in shards] == [f"s3://{bucket}/d/s{i}.tar" for i in range(4)]
    assert shards == [stat_shard(Shard(s.url), options) for s in shards]
    assert [s.size for s in shards] == [s3fs_fresh.size(s.url) for s in shards]
    assert not any(s.listed for s in shards)  # a later stat_shards lists again
    s3_proxy.reset_stats()
    assert stat_shards(shards, options) == shards and s3_proxy.counts.get("GET", 0) >= 1
    with pytest.raises(NoShardsError, match="nothing-"):
        expand_urls(f"s3://{bucket}/d/nothing-*.tar", options)


def test_a_glob_s_listing_is_trusted_only_while_it_is_fresh(
    s3_env, s3fs_fresh, tmp_path, monkeypatch
):
    """The shards a glob gives (``expand_urls``, or a dataset's ``shards_for``) carry their
    listing's versions, which ``stat_shards`` takes as they are right after the listing. Kept
    longer (a user's list of shards, stat'ed or profiled later), they are listed again: an
    overwritten shard then has its new version, never the old listing's."""
    import driftloader.sources as sources

    bucket = _new_bucket(s3_env, "fresh", False)
    for i in range(2):
        write_shard(tmp_path / f"s{i}.tar", 3 + i, seed=i)
        s3fs_fresh.put(str(tmp_path / f"s{i}.tar"), f"{bucket}/d/s{i}.tar")
    options = {"client_kwargs": {"endpoint_url": s3_env}}
    shards = expand_urls(f"s3://{bucket}/d/s*.tar", options)
    s3fs_fresh.put(str(tmp_path / "s0.tar"), f"{bucket}/d/s1.tar")  # s1 overwritten since
    assert stat_shards(shards, options) == shards  # just listed: taken as the listing says
    monkeypatch.setattr(sources, "LISTING_TRUSTED_S", -1.0)  # as if kept past it
    now = stat_shards(shards, options)
    assert now[0] == shards[0] and now[1].version != shards[1].version
    assert now[1] == stat_shard(Shard(shards[1].url), options)  # the object's new version


def test_pinned_manifest_shards_are_checked_from_one_listing(
    s3_proxy, s3_bucket, s3fs_fresh, tmp_path
):
    """A snapshot manifest pins VersionIds: one versions listing checks them all (an
    overwritten shard keeps its pinned version), no HEAD; a deleted version still fails."""
    import boto3

    for i in range(3):
        write_shard(tmp_path / f"p{i}.tar", 2 + i, seed=i)
        s3fs_fresh.put(str(tmp_path / f"p{i}.tar"), f"{s3_bucket}/p{i}.tar")
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    pinned = stat_shards(expand_urls(f"s3://{s3_bucket}/p{{0..2}}.tar", options), options)
    manifest = tmp_path / "snap.json"
    entries = [{"url": s.url, "version": s.version, "size": s.size} for s in pinned]
    manifest.write_text(json.dumps({"shards": entries}))
    s3fs_fresh.put(str(tmp_path / "p0.tar"), f"{s3_bucket}/p1.tar")  # p1 overwritten since
    shards = expand_urls(str(manifest), options)
    s3_proxy.reset_stats()
    checked = stat_shards(shards, options)
    assert s3_proxy.counts == {"GET": 1}  # one listing of versions, no HEAD
    assert checked == [Shard(s.url, s.version, s.size, True) for s in pinned]
    client = boto3.client("s3", endpoint_url=s3_proxy.endpoint)
    client.delete_object(Bucket=s3_bucket, Key="p2.tar", VersionId=pinned[2].version[2:])
    with pytest.raises(VersionMismatch, match=r"p2\.tar: pinned version v:.* no longer exists"):
        stat_shards(shards, options)


def test_a_versioned_bucket_stops_the_plain_listing_started_beside_its_versioning(
    s3_proxy, s3_bucket, s3fs_fresh, monkeypatch
):
    """The first listing of a bucket in a process starts a plain listing while it asks the
    bucket's versioning; a versioned bucket then needs object versions, and the plain listing
    stops after its current page instead of paging through the whole folder unused (pages of
    5 keys here, as of 1,000 on S3)."""
    import time

    import driftloader.listing as listing

    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    s3fs_fresh.pipe({f"{s3_bucket}/many/k-{i:03d}.tar": b"x" for i in range(40)})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 50
    shards = stat_shards(expand_urls(f"s3://{s3_bucket}/many/k-*.tar", options), options)
    assert len(shards) == 40 and all(s.version.startswith("v:") for s in shards)
    time.sleep(0.5)  # a plain listing left running asks for its next pages meanwhile
    s3_proxy.latency_ms = 0
    kinds = [_listing_kind(r.target) for r in s3_proxy.requests]
    assert kinds.count("versions") == 8 and kinds.count("versioning") == 1  # 40 keys, pages of 5
    assert kinds.count("objects") <= 2  # the page in flight when versioning answered, at most


def test_shard_version_of_a_listed_object_is_the_version_a_shardversion_gives():
    """The direct form for a listed S3 object (ETag, no VersionId) and the general one agree."""
    from driftloader.sources import shard_version

    infos = [
        {"ETag": '"9b2cf5"', "size": 3},
        {"etag": "abc-2", "size": 3},
        {"VersionId": "v1", "ETag": '"a"'},
        {"VersionId": "null", "ETag": '"a"'},
        {"version_id": "v2", "etag": "a"},
        {"size": 3, "mtime": 5.0},
        {},
    ]
    for info in infos:
        version = ShardVersion.from_info(info)
        assert shard_version(info) == (None if version is None else str(version)), info


def test_shards_of_takes_urls_or_shards_but_says_so_for_a_mix(tmp_path):
    from driftloader.sources import Shard, shards_of

    path = str(tmp_path / "a.tar")
    open(path, "wb").close()
    given = [Shard(path, "s:1-2", 0)]
    assert shards_of(given) == given  # stat'ed shards go on as they are
    assert [s.url for s in shards_of([path])] == [path]
    with pytest.raises(ValueError, match="either shard URLs or Shards"):
        shards_of([path, Shard(path)])


def test_what_a_paused_collector_saw_made_goes_to_the_oldest_generation():
    """``gc_paused`` (100k shards made at once, none of them garbage): what was made meanwhile
    is in the oldest generation afterwards, so the next young collections do not walk it
    (they walked it all before a gated first sample over 100k shards)."""
    import gc

    from driftloader.sources import gc_paused

    if not gc.isenabled():
        pytest.skip("the collector is off in this process")
    with gc_paused():
        assert not gc.isenabled()
        made = [[i] for i in range(1000)]  # lists: objects the collector tracks
    assert gc.isenabled()
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert all(id(o) in oldest for o in made)


def test_a_listings_pages_make_their_shards_and_any_other_order_is_sorted():
    """A glob's shards are made from each page's objects as botocore gives them, on the
    listing's thread: the names it matches, versioned by ETag, by VersionId when there is one,
    else by size and time. A listing in order with each name once is kept as it is; any other
    (a name twice, out of order) is sorted, each name's first entry kept."""
    import re
    from datetime import datetime, timezone

    import driftloader.sources as sources

    def item(name: str, **more) -> dict:
        return {"Key": f"d/{name}", "ETag": f'"{name[-5]}"', "Size": 3, **more}

    page = sources._PageShards("s3://b/d/", re.compile(r"s\d\.tar\Z").match, 5.0)
    shards = page([item("s0.tar"), item("s1.tar"), item("s1a.txt"), item("s2.tar")])
    assert shards == [Shard(f"s3://b/d/s{i}.tar", f"e:{i}", 3) for i in range(3)]
    assert [s.listed for s in shards] == [5.0] * 3
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    odd = page(
        [
            item("s0.tar", VersionId="v1"),  # a version: its id, not its ETag
            item("s1.tar", VersionId="null"),  # written before versioning: its ETag
            {"Key": "d/s2.tar", "Size": 3, "LastModified": when},  # no ETag
        ]
    )
    assert [s.version for s in odd] == [
        "v:v1",
        "e:1",
        sources.shard_version({"size": 3, "LastModified": when}),
    ]
    assert odd[2].version.startswith("s:")
    assert sources._each_once_in_order(shards) is shards
    a, b, c = shards
    older = Shard(a.url, "e:old", 3)
    assert sources._each_once_in_order([b, a, older, c]) == [a, b, c]  # out of order, twice
    assert sources._each_once_in_order([b, a, older, c])[0].version == "e:0"  # the first kept


def test_the_shards_and_the_stores_filesystems_share_one_session(s3_bucket, s3_env, monkeypatch):
    """The store's S3 filesystem differs from the shards' only in its client settings (its
    timeouts): it makes its client from the same aiobotocore session, which holds botocore's
    loaded models (~0.06 s a client in a fresh process). Keys changed in the environment get
    a session of their own, whose credentials are resolved again."""
    import driftloader as dl
    from driftloader.sources import filesystem

    options = {"client_kwargs": {"endpoint_url": s3_env}}
    url = f"s3://{s3_bucket}/a.tar"
    data = filesystem(url, options)
    data.pipe_file(f"{s3_bucket}/a.tar", b"tar")
    store = dl.ProfileStore(f"s3://{s3_bucket}/drift", options).fs
    assert store is not data and store.config_kwargs != data.config_kwargs
    assert store.session is data.session
    assert store.cat_file(f"{s3_bucket}/a.tar") == b"tar"  # both clients work
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    other = filesystem(url, options)
    assert other is not data and other.session is not data.session
    assert other.cat_file(f"{s3_bucket}/a.tar") == b"tar"  # moto takes any key
