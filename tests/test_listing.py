"""Listing a long S3 folder: after the first page, numbered names are listed in ranges at once
(``listing.objects_v2``), and the ranges lose and repeat no name whatever the names are."""

from __future__ import annotations

import random

import boto3
import pytest

import driftloader.listing as listing
from driftloader.sources import expand_urls, filesystem

from .test_sources import _listing_kind, _new_bucket


def _plain_listing(endpoint: str, bucket: str, prefix: str) -> list[tuple[str, int, str]]:
    """(key, size, ETag) of the folder's own objects, page after page, as boto3 lists them."""
    client = boto3.client("s3", endpoint_url=endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": 7}
    )
    return [(o["Key"], o["Size"], o["ETag"]) for p in pages for o in p.get("Contents", ())]


def _listed(bucket: str, prefix: str, options: dict) -> list[tuple[str, int, str]]:
    fs = filesystem(f"s3://{bucket}", options)
    infos = listing.objects(fs, bucket, prefix)
    return [(i["Key"].split("/", 1)[1], i["size"], i["ETag"]) for i in infos]


def test_numbered_names():
    assert listing._numbered("d/k-0000.tar", "d/k-0999.tar") == ("d/k-", 4, 999)
    assert listing._numbered("d/k-000123.tar", "d/k-000130.json") == ("d/k-", 6, 130)
    assert listing._numbered("d/k-0.tar", "d/k-1899.tar") is None  # widths differ
    assert listing._numbered("d/k-0001.tar", "d/k-0001.txt") is None  # same number
    assert listing._numbered("d/a.tar", "d/b.tar") is None


def test_a_long_listing_of_numbered_names_is_asked_in_ranges_at_once(
    s3_proxy, s3_env, s3fs_fresh, monkeypatch
):
    """240 shards in pages of 5: a plain listing is 48 round trips one after the other. The
    glob now lists the first page, probes where the numbers end, and lists the rest in ranges
    at once: many requests in flight, the same names, sizes and ETags, few requests more."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    bucket = _new_bucket(s3_env, "ranges", False)
    s3fs_fresh.pipe({f"{bucket}/many/k-{i:05d}.tar": b"x" * (i % 7) for i in range(240)})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.reset_stats()
    s3_proxy.latency_ms = 20
    shards = expand_urls(f"s3://{bucket}/many/k-*.tar", options)
    s3_proxy.latency_ms = 0
    plain = _plain_listing(s3_env, bucket, "many/k-")
    assert [(s.url, s.size, s.version) for s in shards] == [
        (f"s3://{bucket}/{key}", size, "e:" + etag.strip('"')) for key, size, etag in plain
    ]
    assert s3_proxy.max_in_flight >= 8  # was 1: each page asked for after the last
    lists = [_listing_kind(r.target) for r in s3_proxy.requests].count("objects")
    assert lists <= 48 + listing.LIST_RANGES + 16  # pages, a part page per range, probes


@pytest.mark.parametrize("ranges", [2, 32])
def test_ranges_lose_and_repeat_no_name_whatever_the_names(
    s3_proxy, s3_env, s3fs_fresh, monkeypatch, ranges
):
    """Numbered names mixed with names that do not fit their pattern (other widths, other
    suffixes, letters, a subfolder, non-ASCII): the ranged listing gives exactly the plain
    listing's objects, in its order."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    monkeypatch.setattr(listing, "LIST_RANGES", ranges)
    bucket = _new_bucket(s3_env, "mixed", False)
    rng = random.Random(ranges)
    names = {f"k-{i:04d}.tar" for i in range(0, 400, 3)}
    names |= {f"k-{i:04d}.json" for i in rng.sample(range(400), 20)}
    names |= {f"k-{i}.tar" for i in rng.sample(range(1000), 15)}  # not padded
    names |= {f"k-{i:06d}.tar" for i in rng.sample(range(10**6), 10)}  # wider
    names |= {"k-abc.tar", "k-0150x.tar", "k-é.tar", "k-9999.tar", "k-", "k-0200/inner.tar"}
    s3fs_fresh.pipe({f"{bucket}/d/{n}": n.encode() for n in names})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    got = _listed(bucket, "d/k-", options)
    plain = _plain_listing(s3_env, bucket, "d/k-")
    assert got == plain
    assert len(plain) == len(names) - 1  # all but the subfolder's object


def test_timestamps_read_by_python_parse_as_botocore_does():
    from botocore.utils import parse_timestamp

    for text in (
        "2026-01-01T00:00:00.000Z",
        "2026-12-03T10:17:42.123Z",
        "2026-12-03T10:17:42Z",
        "Thu, 03 Dec 2026 10:17:42 GMT",  # a header's form: botocore's parser
        "1767225600",
    ):
        assert listing._timestamp(text) == parse_timestamp(text), text


def test_an_s3_filesystem_parses_a_listing_s_timestamps_itself(s3_env, s3fs_fresh, monkeypatch):
    """botocore parses each listed object's LastModified with dateutil (~40 us: most of the
    client's time for a page of 1,000 keys); driftloader's S3 filesystems parse them with
    Python's ISO 8601 parser, to the same times."""
    calls, parse = [], listing._timestamp

    def counted(value):
        calls.append(value)
        return parse(value)

    monkeypatch.setattr(listing, "_timestamp", counted)
    bucket = _new_bucket(s3_env, "stamps", False)
    s3fs_fresh.pipe({f"{bucket}/d/k-{i}.tar": b"x" for i in range(3)})
    options = {"client_kwargs": {"endpoint_url": s3_env}, "default_block_size": 1 << 20}
    got = listing.objects(filesystem(f"s3://{bucket}", options), bucket, "d/")
    want = boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket=bucket, Prefix="d/")
    assert [i["LastModified"] for i in got] == [o["LastModified"] for o in want["Contents"]]
    assert len(calls) == 3  # was 0: botocore's own parser


def test_a_store_that_ignores_start_after_costs_time_not_keys(
    s3_proxy, s3_env, s3fs_fresh, monkeypatch
):
    """Some S3-compatible stores do not honour ``StartAfter``: each range then lists from the
    folder's start, and keeps only the keys of its own range (each key once)."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    monkeypatch.setattr(listing, "LIST_RANGES", 4)
    bucket = _new_bucket(s3_env, "nostart", False)
    s3fs_fresh.pipe({f"{bucket}/d/k-{i:04d}.tar": b"x" for i in range(40)})
    s3_proxy.ignored_params = {"start-after"}
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    assert _listed(bucket, "d/k-", options) == _plain_listing(s3_env, bucket, "d/k-")


def test_hashed_names():
    first, last = _sha1(1), _sha1(2)  # 356a19..., da4b92...
    assert listing._hashed(f"c/{first}", f"c/{last}") == (
        "c/",
        8,
        int(first[:8], 16),
        int(last[:8], 16),
    )
    # a hash that starts with digits is no shard number
    digits = ("c/0012" + "a" * 36 + ".json", "c/0283" + "f" * 36 + ".json")
    assert listing._hashed(*digits) == ("c/", 8, 0x0012AAAA, 0x0283FFFF)
    assert listing._hashed("c/ab12cd.json", "c/ab12ce.json") is None  # too short for a hash
    assert listing._hashed("d/k-000000000001.tar", "d/k-000000000999.tar") is None
    assert listing._hashed("c/ref-a.json", "c/ref-b.json") is None
    cuts = listing._hash_cuts("c/", 8, 0x00A1B2C3, 16**8 // 100, listed=1000)
    assert len(cuts) == listing.LIST_RANGES - 1 and cuts == sorted(cuts)  # ~99k keys left
    assert cuts[0] > "c/028f5c28" and all(len(c) == 10 for c in cuts)
    half = 16**8 // 2  # the first page held half the hashes: as many keys are left
    assert listing._hash_cuts("c/", 8, 0, half, listed=1000) == []  # one page: no range
    assert listing._hash_cuts("c/", 8, 0, half, listed=4000) == [
        "c/a0000000",
        "c/c0000000",
        "c/e0000000",
    ]


def _sha1(i: int) -> str:
    import hashlib

    return hashlib.sha1(str(i).encode()).hexdigest()


def test_a_long_listing_of_hashed_names_is_asked_in_ranges_at_once(
    s3_proxy, s3_env, s3fs_fresh, monkeypatch
):
    """A profile store's names start with sha1 hashes (``catalog/<sha1>.<version>.json``):
    after the first page, the rest is cut by hash value, with no probe, and listed at once;
    the same objects as a plain listing, folder by folder or recursively."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    bucket = _new_bucket(s3_env, "hashed", False)
    s3fs_fresh.pipe({f"{bucket}/c/{_sha1(i)}.v{i % 3}.json": b"{}" for i in range(240)})
    s3fs_fresh.pipe({f"{bucket}/c/{_sha1(i)}/deeper.json": b"{}" for i in range(3)})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.latency_ms = 20
    s3_proxy.reset_stats()
    got = _listed(bucket, "c/", options)
    assert s3_proxy.max_in_flight >= 8  # was 1
    s3_proxy.latency_ms = 0
    assert got == _plain_listing(s3_env, bucket, "c/") and len(got) == 240
    fs = filesystem(f"s3://{bucket}", options)
    every = listing.objects(fs, bucket, "c/", recursive=True)
    assert [i["Key"] for i in every] == sorted(s3fs_fresh.find(f"{bucket}/c/"))
    assert len(every) == 243
    from driftloader.store_files import LIST_RANGES, StoreFiles

    files = StoreFiles(f"s3://{bucket}", options)  # a store lists its folders so, fewer at once
    s3_proxy.latency_ms = 20
    s3_proxy.reset_stats()
    tree = files.list_tree(files.path("c"))
    assert sorted(tree) == sorted(s3fs_fresh.find(f"{bucket}/c/"))
    assert 4 <= s3_proxy.max_in_flight <= LIST_RANGES


def test_a_store_listing_has_its_deadline_per_page(s3_proxy, s3_env, s3fs_fresh, monkeypatch):
    """A store's listing of a folder of a million files is a thousand pages: the store's
    ``timeout`` bounds each page, not the whole listing (which ended a check of 100k
    uncompacted catalog rows with ``StoreTimeoutError``). A stalled page still ends it."""
    from driftloader.errors import StoreTimeoutError
    from driftloader.store_files import StoreFiles

    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    bucket = _new_bucket(s3_env, "deadline", False)
    names = sorted(f"{w}-{v}.json" for w in ("ant", "bee", "cat") for v in "abcdefghij")
    s3fs_fresh.pipe({f"{bucket}/store/references/{n}": b"{}" for n in names})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    files = StoreFiles(f"s3://{bucket}/store", options, timeout=1.0)
    s3_proxy.latency_ms = 250  # 6 pages, one after the other (names neither numbered nor hashed)
    listed = files.list_json(files.path("references"))
    assert [p.rsplit("/", 1)[1] for p in listed] == names
    assert s3_proxy.counts["GET"] >= 6  # ~1.5 s in all, past the 1 s deadline
    s3_proxy.latency_ms = 0
    s3_proxy.add_fault("stall", method="GET", path="list-type=2", nth=3, seconds=3)
    with pytest.raises(StoreTimeoutError, match="a page of the listing of .*references.*1 s"):
        files.list_json(files.path("references"))


def test_fewer_ranges_are_spread_evenly():
    cuts = [f"c/{i:02d}" for i in range(31)]  # 32 ranges of equal size
    assert listing._fewer(cuts, 7) == [cuts[i] for i in (3, 7, 11, 15, 19, 23, 27)]
    assert listing._fewer(cuts, 40) == cuts and listing._fewer(cuts, 0) == []


def test_a_range_stops_a_few_keys_past_its_end(s3_env, s3fs_fresh, monkeypatch):
    """A range's keys are expected from the first page's density: its last page asks for a
    few keys more than are left, not a whole page past its end (read and thrown away:
    botocore's parsing is most of a listing's cost). A wrong guess costs a page more."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 100)
    bucket = _new_bucket(s3_env, "stops", False)
    s3fs_fresh.pipe({f"{bucket}/d/k-{i:05d}.tar": b"x" for i in range(400)})
    fs = filesystem(f"s3://{bucket}", {"client_kwargs": {"endpoint_url": s3_env}})
    returned = []

    def call(method, **kwargs):
        page = fs.call_s3(method, **kwargs)
        returned.append(len(page.get("Contents", ())))
        return page

    pages = listing._Pages(fs, bucket, "d/k-", False, False, call=call)
    lo, hi = "d/k-00009.tar", "d/k-00209.tar"  # 200 keys
    want = [f"{bucket}/d/k-{i:05d}.tar" for i in range(10, 210)]
    for expected, sizes in (
        (200, [100, 100, 18]),  # 8 + 5% past the end
        (150, [100, 65, 100]),  # fewer than there are: a whole page more
        (None, [100, 100, 100]),  # nothing expected: whole pages, 100 keys past the end
    ):
        returned.clear()
        got = pages.between({"StartAfter": lo}, lo, hi, expected)
        assert [i["Key"] for i in got] == want
        assert returned == sizes
