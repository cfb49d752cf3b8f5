"""Listing a long S3 folder: after the first page, numbered names are listed in ranges at once
(``listing.objects_v2``), and the ranges lose and repeat no name whatever the names are."""

from __future__ import annotations

import random
from xml.etree import ElementTree

import boto3
import pytest

import driftloader.listing as listing
import driftloader.listing_pages as listing_pages
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
    monkeypatch.setattr(listing, "LIST_BUDGET_S", 60.0)  # a loaded machine: all at once
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
        assert listing_pages._timestamp(text) == parse_timestamp(text), text


def test_an_s3_filesystem_parses_a_listing_s_timestamps_itself(s3_env, s3fs_fresh, monkeypatch):
    """botocore parses each listed object's LastModified with dateutil (~40 us: most of the
    client's time for a page of 1,000 keys); driftloader's S3 filesystems parse them with
    Python's ISO 8601 parser, to the same times, each one once a page."""
    calls, parse = [], listing_pages._timestamp

    def counted(value):
        calls.append(value)
        return parse(value)

    monkeypatch.setattr(listing_pages, "_timestamp", counted)
    bucket = _new_bucket(s3_env, "stamps", False)
    s3fs_fresh.pipe({f"{bucket}/d/k-{i}.tar": b"x" for i in range(3)})
    options = {"client_kwargs": {"endpoint_url": s3_env}, "default_block_size": 1 << 20}
    got = listing.objects(filesystem(f"s3://{bucket}", options), bucket, "d/")
    want = boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket=bucket, Prefix="d/")
    assert [i["LastModified"] for i in got] == [o["LastModified"] for o in want["Contents"]]
    assert calls and len(calls) == len(set(calls))  # was none: botocore's own parser
    # (each time once a page: the 3 objects may share their second)


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
    assert listing._hashed(f"c/{first}.1.json", f"c/{last}.1.json") == ("c/", 8)
    # a hash that starts with digits is no shard number
    assert listing._hashed("c/0012" + "a" * 36, "c/0283" + "f" * 36) == ("c/", 8)
    assert listing._hashed("c/ab12cd.json", "c/ab12ce.json") is None  # too short for a hash
    assert listing._hashed("d/k-000000000001.tar", "d/k-000000000999.tar") is None
    assert listing._hashed("c/ref-a.json", "c/ref-b.json") is None
    # a store's profiles: shards/<2 digits>/<sha1>/<version>.json, cut at the folders, whether
    # the first page spans folders or stays in one
    a, b = "00" + "1" * 38, "01" + "e" * 38
    assert listing._hashed(f"st/shards/00/{a}/v.json", f"st/shards/01/{b}/v.json") == (
        "st/shards/",
        2,
    )
    c = "00" + "f" * 38
    assert listing._hashed(f"st/shards/00/{a}/v.json", f"st/shards/00/{c}/v.json") == (
        "st/shards/",
        2,
    )
    # a folder that only looks like hex digits is no fan-out: the hash is cut
    assert listing._hashed(f"c/{first}", f"c/{last}") == ("c/", 8)


def test_hash_cuts_from_the_first_page_s_density():
    head = "c/"
    scale = listing._Scale(head, 8, 16, "c/00000000", "c/028f5c28", 1000)  # 1% of the hashes
    cuts = scale.hash_cuts("c/028f5c28")
    assert len(cuts) == listing.LIST_RANGES - 1 and cuts == sorted(cuts)  # ~99k keys left
    assert cuts[0] > "c/028f5c28" and all(len(c) == 10 for c in cuts)
    assert scale.between("c/10000000", "c/20000000") == pytest.approx(6250, rel=0.01)
    half = listing._Scale(head, 8, 16, "c/00000000", "c/80000000", 1000)  # half of them
    assert half.hash_cuts("c/80000000") == []  # ~1,000 left: one page, no range
    quarter = listing._Scale(head, 8, 16, "c/00000000", "c/40000000", 4000)
    assert quarter.hash_cuts("c/40000000") == [
        f"c/{v:08x}" for v in (0x40000001 + 0xBFFFFFFF * j // 12 for j in range(1, 12))
    ]
    # inside one fan-out folder: 1,000 keys in a quarter of folder 00 make 4,000 a folder
    inner = listing._Scale("s/", 2, 16, "s/00/00000000", "s/00/40000000", 1000)
    assert inner.between("s/00/40000000", "s/01") == 3000
    assert inner.between("s/01", "s/02") == 4000
    assert len(inner.hash_cuts("s/00/40000000")) == listing.LIST_RANGES - 1


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
    monkeypatch.setattr(listing, "LIST_BUDGET_S", 60.0)  # a loaded machine: all at once
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


@pytest.mark.parametrize("ranges", [2, 8])
def test_hashed_ranges_lose_and_repeat_no_name_whatever_the_names(
    s3_proxy, s3_env, s3fs_fresh, monkeypatch, ranges
):
    """Hashed names mixed with names at the cuts, just before and after them, uppercase hex,
    names that are no hash and a subfolder, from a store that also ignores ``StartAfter``:
    exactly the plain listing, in its order."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    bucket = _new_bucket(s3_env, "hmix", False)
    names = {f"{_sha1(i)}.v.json" for i in range(150)}
    names |= {f"{v:x}0000000" for v in range(16)}  # where a cut may fall
    names |= {f"{v:x}0000000x" for v in range(0, 16, 3)} | {f"{v:x}000000" for v in range(16)}
    names |= {_sha1(7).upper(), "compacted.jsonl", "zz-last.json", "é.json", "0" * 40 + "/in"}
    s3fs_fresh.pipe({f"{bucket}/c/{n}": b"{}" for n in names})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    fs = filesystem(f"s3://{bucket}", options)
    plain = _plain_listing(s3_env, bucket, "c/")
    for ignored in (set(), {"start-after"}):
        s3_proxy.ignored_params = ignored
        got = listing.objects(fs, bucket, "c/", ranges=ranges)
        assert [(i["Key"].split("/", 1)[1], i["size"], i["ETag"]) for i in got] == plain
    assert len(plain) == len(names) - 1  # all but the subfolder's object


def test_a_store_lists_its_profiles_folder_in_ranges(s3_proxy, s3_env, s3fs_fresh, monkeypatch):
    """A store's profiles sit in fan-out folders (``shards/<2 digits>/<sha1>/...``): its
    listing is cut at those folders, whether the first page spans several or stays in one,
    and gives each file once."""
    from driftloader.store import ProfileStore
    from driftloader.store_files import LIST_RANGES

    bucket = _new_bucket(s3_env, "profiles", False)
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    store = ProfileStore(f"s3://{bucket}/st", options)
    from driftloader.store import url_hash

    urls = [f"s3://data/shard-{i:05d}.tar" for i in range(20_000)]
    first = [u for u in urls if url_hash(u).startswith("00")][:20]  # folder 00: 20 profiles
    urls = first + [u for u in urls if not url_hash(u).startswith("00")][:280]
    paths = [store.profile_path(u, "e:1") for u in urls]
    s3fs_fresh.pipe({p: b"{}" for p in paths})
    monkeypatch.setattr(listing, "LIST_BUDGET_S", 60.0)  # a loaded machine: all at once
    for page in (5, 40):  # the first page: inside folder 00, or over 30 folders
        monkeypatch.setattr(listing, "LIST_PAGE_KEYS", page)
        s3_proxy.latency_ms = 20
        s3_proxy.reset_stats()
        found = store._s3_listing(store.path("shards"), recursive=True)
        s3_proxy.latency_ms = 0
        assert [i["Key"] for i in found] == sorted(paths)
        assert 4 <= s3_proxy.max_in_flight <= LIST_RANGES
        assert store.list_sizes(store.path("shards")) == dict.fromkeys(sorted(paths), 2)


def test_a_store_lists_nothing_in_a_missing_bucket_and_keeps_folder_marks(s3_env, s3fs_fresh):
    """As with s3fs's own listings: a bucket that does not exist holds nothing (a read-only
    store there lists no reference), and a folder mark (an empty ``x/`` object some tools
    write) is listed with the files, so removing a folder's files removes it too."""
    from driftloader.store_files import StoreFiles

    gone = StoreFiles("s3://no-such-bucket-here/st", {"client_kwargs": {"endpoint_url": s3_env}})
    assert gone.list_json(gone.path("references")) == []
    assert gone.list_tree(gone.path("catalog")) == {}
    bucket = _new_bucket(s3_env, "marks", False)
    s3fs_fresh.pipe({f"{bucket}/st/decisions/r/": b"", f"{bucket}/st/decisions/r/a.json": b"{}"})
    files = StoreFiles(f"s3://{bucket}/st", {"client_kwargs": {"endpoint_url": s3_env}})
    assert sorted(files.list_tree(files.path("decisions"))) == [
        f"{bucket}/st/decisions/r/",
        f"{bucket}/st/decisions/r/a.json",
    ]


def test_a_stalled_page_stops_the_other_ranges(s3_proxy, s3_env, s3fs_fresh, monkeypatch):
    """When one range's page outlasts the store's deadline, the other ranges ask for no page
    more: the error comes after about one deadline, not after every other range is listed."""
    from driftloader.errors import StoreTimeoutError
    from driftloader.store_files import StoreFiles

    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    bucket = _new_bucket(s3_env, "stall", False)
    s3fs_fresh.pipe({f"{bucket}/st/catalog/{_sha1(i)}.json": b"{}" for i in range(400)})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    files = StoreFiles(f"s3://{bucket}/st", options, timeout=1.0)
    s3_proxy.latency_ms = 300  # 80 pages: 10 a range, 3 s each range
    s3_proxy.add_fault("stall", method="GET", path="list-type=2", nth=3, seconds=4)
    s3_proxy.reset_stats()
    with pytest.raises(StoreTimeoutError, match="a page of the listing of"):
        files.list_json(files.path("catalog"))
    pages = [r for r in s3_proxy.requests if "list-type=2" in r.target]
    assert len(pages) < 60  # listing on would take 80


def test_a_slow_first_page_asks_fewer_ranges_at_once(s3_proxy, s3_env, s3fs_fresh, monkeypatch):
    """A server that builds its pages one at a time answers n at once in n times as long:
    the ranges at once are cut to what the first page took (moto at 100k shards answered 32
    at once past botocore's read timeout), and the listing is the same."""
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 5)
    monkeypatch.setattr(listing, "LIST_BUDGET_S", 0.9)
    bucket = _new_bucket(s3_env, "slowpages", False)
    s3fs_fresh.pipe({f"{bucket}/d/k-{i:04d}.tar": b"x" for i in range(120)})
    options = {"client_kwargs": {"endpoint_url": s3_proxy.endpoint}}
    s3_proxy.latency_ms = 300  # the first page takes >= 0.3 s: at most 3 at once
    s3_proxy.reset_stats()
    got = _listed(bucket, "d/k-", options)
    s3_proxy.latency_ms = 0
    assert got == _plain_listing(s3_env, bucket, "d/k-")
    assert s3_proxy.max_in_flight <= 3  # 32 ranges otherwise (8 with a 1 s budget)


def _botocore_page(body: bytes) -> dict:
    """``body`` as botocore parses a ListObjectsV2 page on our sessions (quick timestamps),
    with ``quick_objects`` first when it takes the page."""
    import botocore.session
    from botocore.parsers import ResponseParserFactory

    model = botocore.session.get_session().get_service_model("s3")
    shape = model.operation_model("ListObjectsV2").output_shape
    factory = ResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=listing_pages._timestamp)
    response, custom = {"status_code": 200, "headers": {}, "body": body}, {}
    listing_pages.quick_objects(response_dict=response, customized_response_dict=custom)
    return {**factory.create_parser("rest-xml").parse(response, shape), **custom}


def _s3_page(objects: str) -> bytes:
    head = '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>'
    tail = "<KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>"
    tail += "<NextContinuationToken>t/0=</NextContinuationToken>"
    tail += "<CommonPrefixes><Prefix>d/sub/</Prefix></CommonPrefixes></ListBucketResult>"
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}{objects}{tail}'.encode()


def test_quick_objects_read_a_page_as_botocore_does():
    """S3's page as it comes (ETags quoted as entities, a flattened list of checksum
    algorithms, a key with XML escapes): ``quick_objects`` takes its objects and botocore the
    rest, and the parse is botocore's own. A page with a field it does not read (an owner)
    goes to botocore whole."""
    one = (
        "<Contents><Key>d/a &amp; b &lt;1&gt;.tar</Key>"
        "<LastModified>2026-12-01T10:00:00.000Z</LastModified>"
        "<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>"
        "<ChecksumAlgorithm>CRC32</ChecksumAlgorithm><ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm>"
        "<ChecksumType>FULL_OBJECT</ChecksumType><Size>1234</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        "<Contents><Key>d/\u00e9t\u00e9 0.tar</Key><LastModified>2026-12-01T10:00:01Z</LastModified>"
        "<ETag>&quot;e-2&quot;</ETag><Size>0</Size><StorageClass>GLACIER</StorageClass></Contents>"
    )
    plain = _s3_page(one)
    response, custom = {"status_code": 200, "headers": {}, "body": plain}, {}
    listing_pages.quick_objects(response_dict=response, customized_response_dict=custom)
    assert len(custom["Contents"]) == 2 and b"Contents" not in response["body"]  # taken
    assert _botocore_page(plain) == _botocore_page_unhooked(plain)
    owned = one.replace("<Size>0</Size>", "<Size>0</Size><Owner><ID>x</ID></Owner>")
    response, custom = {"status_code": 200, "headers": {}, "body": _s3_page(owned)}, {}
    listing_pages.quick_objects(response_dict=response, customized_response_dict=custom)
    assert custom == {} and response["body"] == _s3_page(owned)  # botocore's whole
    elsewhere = _s3_page(f"<Other>{one}</Other>")  # objects, but not the page's own
    response, custom = {"status_code": 200, "headers": {}, "body": elsewhere}, {}
    listing_pages.quick_objects(response_dict=response, customized_response_dict=custom)
    assert custom == {} and response["body"] == elsewhere  # left to botocore
    error = {"status_code": 500, "headers": {}, "body": plain}
    listing_pages.quick_objects(response_dict=error, customized_response_dict=custom)
    assert custom == {} and error["body"] == plain


def _object(key: str, tail: str = "<StorageClass>STANDARD</StorageClass>", sep: str = "") -> str:
    fields = [
        f"<Key>{key}</Key>",
        "<LastModified>2026-12-01T10:00:00.000Z</LastModified>",
        "<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>",
        "<Size>7</Size>",
        tail,
    ]
    return f"<Contents>{sep}{sep.join(fields)}{sep}</Contents>{sep}"


def latin_page() -> bytes:
    page = _s3_page(_object("d/\u00e9.tar")).decode().replace("UTF-8", "ISO-8859-1")
    return page.encode("latin-1")


def test_the_quick_scan_of_a_page_reads_what_the_parse_reads():
    """``_scanned`` reads a page's objects with one regular expression (~3x quicker than
    ElementTree's parse and walk, ``_walked``) and must give exactly what the parse gives:
    S3's compact layout and moto's indented one, references and line ends in keys, fields
    left out, empty or repeated. A page it cannot read exactly goes to the parse; a page cut
    short or an ``<Error>`` is a 500 either way."""
    algorithms = (
        "<ChecksumAlgorithm>CRC32</ChecksumAlgorithm><ChecksumAlgorithm>SHA1</ChecksumAlgorithm>"
    )
    read = [
        _object("d/a.tar") + _object("d/b.tar"),  # S3's layout
        _object("d/a.tar", sep="\n    ") + _object("d/b.tar", sep="\n    "),  # moto's
        _object("d/a &amp; b &lt;1&gt; &#233;t&#xE9; &quot;q&quot;.tar"),  # references
        _object("d/line\r\nend\r.tar"),  # an XML parser makes both line ends "\n"
        _object("d/\u00e9t\u00e9 \u4e2d.tar", tail=""),  # no storage class
        _object("d/a.tar", tail="<StorageClass></StorageClass>"),  # empty
        _object("d/a.tar", tail="<StorageClass>GLACIER</StorageClass>").replace(
            "<Size>", f"{algorithms}<ChecksumType>COMPOSITE</ChecksumType><Size>"
        ),
    ]
    for objects in read:
        page = _s3_page(objects)
        scanned, walked = listing_pages._scanned(page), listing_pages._walked(page)
        assert scanned is not None and walked is not None
        assert scanned[1] == walked[1], objects
        assert b"Contents" not in scanned[0]
        assert _botocore_page(page) == _botocore_page_unhooked(page)
    assert listing_pages._scanned(_s3_page(read[3]))[1][0]["Key"] == "d/line\nend\n.tar"
    parsed_only = [
        _object("d/a.tar", tail="<Owner><ID>x</ID></Owner>"),  # a field not read quickly
        _object("<![CDATA[d/a.tar]]>"),
        _object("d/a.tar").replace("<Size>", "<!-- size --><Size>"),
        f"<Other>{_object('d/a.tar')}</Other>",  # objects, but not the page's own
        _object("d/a.tar") + "<Contents/>",
        _object("d/real.tar").replace("<Contents>", "<Contents >") + f"<!--{_object('ghost')}-->",
        f"<Contents/><Foo>{_object('ghost')}</Foo>",  # an empty one beside one not its own
        _object("d/a.tar", sep="\x0c"),  # white space to Python, not to XML
        _object("d/a\x01.tar"),  # not XML text: in a key,
        _object("d/a.tar", tail="<StorageClass>S\x1fT</StorageClass>"),  # in another field,
        _object("d/a.tar").replace("&quot;9b", "&quot;\uffff9b"),  # one UTF-8 can hold,
        _object("d/a.tar") + "<StartAfter>d/\x0b</StartAfter>",  # outside the objects
        _object("d/a.tar").replace(
            "<Size>", "<ChecksumAlgorithm>CRC&#51;2</ChecksumAlgorithm><Size>"
        ),
        _object("d/a.tar").replace("2026-12-01", "&#50;026-12-01"),
        _object("d/a.tar") + "<Prefix><![CDATA[x<Contents/>y]]></Prefix>",
        _object("d/Contents.tar") + "<StartAfter>d/Contents</StartAfter>",  # refused: read
    ]
    for objects in parsed_only:
        page = _s3_page(objects)
        assert listing_pages._scanned(page) is None, objects
        try:
            walked = listing_pages._walked(page)
        except ElementTree.ParseError:
            walked = "500"
        response, custom = {"status_code": 200, "headers": {}, "body": page}, {}
        listing_pages.quick_objects(response_dict=response, customized_response_dict=custom)
        assert (walked == "500") == (response["status_code"] == 500), objects
        assert walked in ("500", None) or custom["Contents"] == walked[1], objects
    entity = _s3_page(_object("d/&foo;.tar"))  # an entity the page's DTD declares
    entity = entity.replace(b"\n<", b'\n<!DOCTYPE ListBucketResult [<!ENTITY foo "bar">]>\n<', 1)
    assert (
        listing_pages._scanned(entity) is None
        and listing_pages._walked(entity)[1][0]["Key"] == "d/bar.tar"
    )
    for bom in (b"\xef\xbb\xbf" + _s3_page(_object("d/a.tar")), b"\xef\xbb\xbf" + latin_page()):
        assert listing_pages._scanned(bom) is None  # the parse of the bytes reads it
        assert listing_pages._walked(bom) is not None
    assert listing_pages._scanned(latin_page()) is None
    assert listing_pages._walked(latin_page())[1][0]["Key"] == "d/\u00e9.tar"
    page = _s3_page(_object("d/a.tar") + _object("d/b.tar"))
    error = page.replace(b"</ListBucketResult>", b"</Error>")  # S3's error root: no namespace
    error = error.replace(
        b'ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', b"Error"
    )
    for broken in (page[: len(page) - 30], error):
        response, custom = {"status_code": 200, "headers": {}, "body": broken}, {}
        listing_pages.quick_objects(response_dict=response, customized_response_dict=custom)
        assert response["status_code"] == 500 and custom == {}


def _botocore_page_unhooked(body: bytes) -> dict:
    real = listing_pages.quick_objects
    try:
        listing_pages.quick_objects = lambda **_: None
        return _botocore_page(body)
    finally:
        listing_pages.quick_objects = real


def test_a_listing_on_s3_gives_what_boto3_gives_with_the_objects_read_quickly(s3_env, monkeypatch):
    """Through our filesystems' sessions on the moto server: keys that need escaping and
    ``EncodingType=url`` decoding come out as boto3 lists them, and the pages' objects were
    read by ``quick_objects`` (botocore's shape walk was ~2.5 s of CPU over 100k keys), with
    its quick scan (moto's layout is one it reads)."""
    scans, scan = [], listing_pages._scanned
    monkeypatch.setattr(
        listing_pages, "_scanned", lambda body: scans.append(scan(body)) or scans[-1]
    )
    bucket = _new_bucket(s3_env, "quick", False)
    client = boto3.client("s3", endpoint_url=s3_env)
    keys = ["d/a & b.tar", "d/<x>.tar", "d/\u00e9t\u00e9 %20.tar", "d/plus+sign.tar", "d/sub/x"]
    for i, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * i)
    fs = filesystem(f"s3://{bucket}", {"client_kwargs": {"endpoint_url": s3_env}})
    seen: list[bytes] = []
    fs.connect()  # the client copies the session's hooks: the spy goes after ours
    fs.s3.meta.events.register(
        "before-parse.s3.ListObjectsV2",
        lambda response_dict, **_: seen.append(response_dict["body"]),
    )
    got = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix="d/", Delimiter="/")
    want = client.list_objects_v2(Bucket=bucket, Prefix="d/", Delimiter="/")

    def rows(page: dict) -> list[tuple]:
        return [
            (o["Key"], o["Size"], o["ETag"], o["LastModified"].timestamp())
            for o in page["Contents"]
        ]

    assert rows(got) == rows(want) and len(rows(got)) == 4
    assert got["CommonPrefixes"] == want["CommonPrefixes"]
    assert seen and all(b"<Contents>" not in body for body in seen)  # taken before botocore
    assert scans and all(found is not None for found in scans)


def test_our_sessions_parse_a_listing_page_once_and_still_retry_an_error_under_200(monkeypatch):
    """botocore's check for an ``<Error>`` under a 200 parsed every page before
    ``quick_objects`` parsed it again. On our sessions the check is made in that one parse:
    an error page and a page cut short still become a 500 (retried), for listings and for
    other S3 calls, and a good page is read."""
    import asyncio

    import botocore.session
    import s3fs

    fs = s3fs.S3FileSystem(anon=True, skip_instance_cache=True)
    fs.session = None  # as before its first request
    listing_pages.quick_timestamps(fs)
    events = fs.session.get_component("event_emitter")
    model = botocore.session.get_session().get_service_model("s3")

    def before_parse(operation: str, body: bytes) -> tuple[int, dict]:
        response, custom = {"status_code": 200, "headers": {}, "body": body}, {}
        emitted = events.emit(
            f"before-parse.s3.{operation}",
            operation_model=model.operation_model(operation),
            response_dict=response,
            customized_response_dict=custom,
        )
        if asyncio.iscoroutine(emitted):  # aiobotocore's emitter
            asyncio.run(emitted)
        return response["status_code"], custom

    error = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code></Error>'
    page = _s3_page(
        "<Contents><Key>d/a.tar</Key><ETag>&quot;e&quot;</ETag><Size>1</Size></Contents>"
    )
    assert before_parse("ListObjectsV2", error) == (500, {})
    assert before_parse("ListObjectsV2", page[: len(page) // 2]) == (500, {})  # cut short
    assert before_parse("CompleteMultipartUpload", error)[0] == 500  # botocore's own check
    from xml.etree import ElementTree

    parsers, real = [], ElementTree.XMLParser  # botocore's check and quick_objects make one

    def counted(*args, **kwargs):
        parsers.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ElementTree, "XMLParser", counted)
    status, custom = before_parse("ListObjectsV2", page)
    assert status == 200 and [o["Key"] for o in custom["Contents"]] == ["d/a.tar"]
    assert len(parsers) == 1  # before: 2, botocore's and ours


def test_quick_objects_parse_each_timestamp_of_a_page_once(monkeypatch):
    """Objects written in the same second share their ``LastModified`` text: it is parsed once
    a page, and each object gets the same time botocore would give it."""
    calls, parse = [], listing_pages._timestamp

    def counted(value):
        calls.append(value)
        return parse(value)

    stamps = ["2026-12-01T10:00:00.000Z"] * 3 + ["2026-12-01T10:00:01.000Z"] * 2
    objects = "".join(
        f"<Contents><Key>d/k-{i}.tar</Key><LastModified>{t}</LastModified>"
        f"<ETag>&quot;e{i}&quot;</ETag><Size>{i}</Size></Contents>"
        for i, t in enumerate(stamps)
    )
    monkeypatch.setattr(listing_pages, "_timestamp", counted)
    response, custom = {"status_code": 200, "headers": {}, "body": _s3_page(objects)}, {}
    listing_pages.quick_objects(response_dict=response, customized_response_dict=custom)
    assert sorted(calls) == sorted(set(stamps))  # before: one call an object
    assert [o["LastModified"] for o in custom["Contents"]] == [parse(t) for t in stamps]
