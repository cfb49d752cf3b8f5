"""Listing one S3 folder fresh: its objects' names, versions and sizes, many pages at once.

A folder of 100k shards is 100 pages of ListObjectsV2, and each page names where the next
starts, so a plain listing takes 100 round trips one after the other (~10-20 s on S3) before
the first shard can be read. Shard names are almost always numbered with a fixed width
(``shard-000123.tar``), so after the first page the rest of the folder can be cut into ranges
of those numbers, found by a few probes of one key each, and the ranges listed at once, each
from its ``StartAfter``.

A profile store's names start with hashes (``catalog/<sha1>.<version>.json``, or
``shards/ab/<sha1>/...`` in fan-out folders), spread evenly over the hex digits: the first
page tells how many keys each hex value holds, so the rest is cut into ranges of about equal
size with no probe.

How many ranges go at once depends on what the first page took (``LIST_BUDGET_S``): S3
answers pages side by side, a small server one after the other.

A range is ``(lo, hi]`` in S3's key order: its pages start after ``lo`` and it keeps the keys
up to ``hi``. The ranges tile the key space whatever the names are, so a wrong guess of the
numbers costs only time, never a key: a name that does not fit the pattern lands in whichever
range its place in the order falls in. Names neither numbered nor hashed are listed page after
page, as before.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from xml.etree import ElementTree

LIST_PAGE_KEYS = 1000  # S3's largest page of a listing
LIST_RANGES = 32  # ranges of a long listing asked for at once, each read page after page
LIST_BUDGET_S = 4.0
"""Seconds a page may take when asked for beside the others: requests at once are cut to
this over what the first page took. S3 answers pages side by side (~50-100 ms each, so 32 at
once); a server that builds them one at a time answers n at once in n times as long (moto,
at 300k objects ~1 s a page: 32 at once outlasted botocore's read timeout)."""
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdef")
_HASH_DIGITS = 8  # hex digits of a hashed name that its ranges are cut by
_VERSIONED_BUCKETS: set[tuple[int, str]] = set()
"""(id of a cached filesystem, bucket) of buckets seen versioned: once enabled, S3 versioning
can be suspended but never removed, so this never goes stale."""


def quick_timestamps(fs: Any) -> None:
    """Give an s3fs filesystem (before its first request) a session whose responses parse ISO
    8601 timestamps with Python's own parser: botocore's takes ~40 us for each object's
    ``LastModified`` (dateutil), ~40 of the ~90 ms a page of 1,000 keys costs to read here.
    Other forms go to botocore's parser. Its listings' objects are read by ``quick_objects``.
    Left as it is if it has a session already."""
    if getattr(fs, "session", True) is not None or not isinstance(getattr(fs, "kwargs", 0), dict):
        return
    import aiobotocore.session

    session = aiobotocore.session.AioSession(**fs.kwargs)  # what s3fs would make
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=_timestamp)
    session.register("before-parse.s3.ListObjectsV2", quick_objects)
    _one_parse_per_listing(session)
    fs.session = session
    if hasattr(fs, "_session_is_owned"):  # kept when s3fs refreshes its client
        fs._session_is_owned = False


def _one_parse_per_listing(session: Any) -> None:
    """botocore parses every S3 body to look for an ``<Error>`` root under a 200 (then
    retried as a 500), ~4.5 ms a page of 1,000 keys, before ``quick_objects`` parses it again.
    On our session that check skips ListObjectsV2 pages, and ``quick_objects`` makes it in its
    own parse. A botocore without the handler is left as it is."""
    from botocore import handlers

    check = getattr(handlers, "_handle_200_error", None)
    if check is None:
        return

    def _unless_listing(operation_model: Any, response_dict: Any, **kwargs: Any) -> None:
        if getattr(operation_model, "name", None) != "ListObjectsV2":
            check(operation_model, response_dict, **kwargs)

    events = session.get_component("event_emitter")
    events.unregister("before-parse.s3.*", check)
    events.register_first("before-parse.s3.*", _unless_listing)


def _timestamp(value: Any) -> Any:
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:  # Python 3.10 takes no "Z"
            return datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


_TEXT_FIELDS = frozenset({"Key", "ETag", "StorageClass", "ChecksumType"})


def quick_objects(response_dict: dict, customized_response_dict: dict, **_: Any) -> None:
    """botocore's ``before-parse`` hook for ListObjectsV2 on our sessions: the page's objects
    read in one pass, and the rest of the page left to botocore. botocore walks each object's
    shape field by field, ~17 ms a page of 1,000 keys: 2.5 s of client CPU over a listing of
    100k shards, most of a glob's time to its first sample. The objects come out as botocore
    gives them (its ``EncodingType`` decoding runs after). A page with a field read here in
    no other way (``Owner``, ``RestoreStatus``), or that is not a listing, goes to botocore
    whole. botocore's check for an error under a 200 is made here (``_one_parse_per_listing``):
    a page cut short or an ``<Error>`` is a 500, retried."""
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not body:
        return
    try:
        read = _scanned(body) or _walked(body)
    except ElementTree.ParseError:
        response_dict["status_code"] = 500
        return
    if read is not None:
        response_dict["body"], customized_response_dict["Contents"] = read


_NOT_XML = "\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff"  # characters XML text cannot hold
_TEXT = f"([^<{_NOT_XML}]*)"  # a field's text: no markup, nothing XML refuses
_PLAIN = f"[^<&\r{_NOT_XML}]*"  # no reference either: a time or an algorithm
_OBJECT = re.compile(  # XML's white space only
    rf"<Contents>[ \t\r\n]*<Key>{_TEXT}</Key>[ \t\r\n]*"
    rf"<LastModified>({_PLAIN})</LastModified>[ \t\r\n]*<ETag>{_TEXT}</ETag>[ \t\r\n]*"
    rf"((?:<ChecksumAlgorithm>{_PLAIN}</ChecksumAlgorithm>[ \t\r\n]*)*)"
    rf"(?:<ChecksumType>{_TEXT}</ChecksumType>[ \t\r\n]*)?<Size>(\d+)</Size>[ \t\r\n]*"
    rf"(?:<StorageClass>{_TEXT}</StorageClass>[ \t\r\n]*)?</Contents>[ \t\r\n]*"
)
_NOT_XML_TEXT = re.compile(f"[{_NOT_XML}]")
_ALGORITHM = re.compile(r"<ChecksumAlgorithm>([^<]*)</ChecksumAlgorithm>")


def _scanned(body: bytes) -> tuple[bytes, list[dict]] | None:
    """(the page without its objects, the objects) read with one regular expression, when
    every object is laid out as S3 and moto write it: ~3x quicker than ElementTree's parse
    and walk (~5 ms a page of 1,000 keys, 0.5 s of a glob of 100k). None otherwise (another
    field, a CDATA section, a comment, an encoding other than UTF-8, objects that are not the
    page's own, a page cut short or an error): ``_walked`` reads it. What is left of the page
    is parsed, to check it and to find where each object stood."""
    if b"<Contents>" not in body or b"<!" in body or not body.startswith((b"<?xml ", b"<L")):
        return None  # a comment, CDATA, a DTD (its entities), a byte order mark
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    if not _in_utf8(body):
        return None  # what the parse of the bytes decodes otherwise
    rows: list[tuple] = []  # each object read leaves an empty one in its place
    rest = _OBJECT.sub(lambda m: rows.append(m.groups()) or "<Contents/>", text)
    if rest.count("Contents") != len(rows):  # an object laid out otherwise, or a prefix
        return None
    if _NOT_XML_TEXT.search(rest):  # what the parse of the bytes rejects (the objects' text
        return None  # cannot hold it: searching the whole page took as long as the scan)
    try:
        root = ElementTree.fromstring(rest)
    except ElementTree.ParseError:  # cut short, or what the parse of the bytes reads
        return None
    ns = root.tag[: root.tag.find("}") + 1]
    if root.tag == "Error" or len(root.findall(f"{ns}Contents")) != len(rows):
        return None  # an error, or not all the page's own objects (or an empty one was there)
    try:
        return rest.replace("<Contents/>", "").encode(), _items(rows)
    except ElementTree.ParseError:  # a reference ElementTree alone resolves (in context)
        return None


def _items(rows: list[tuple]) -> list[dict]:
    """The objects of a page from ``_OBJECT``'s groups, as botocore gives them."""
    stamps: dict[str, Any] = {}  # a corpus written in a run shares its seconds
    shared: dict[str, Any] = {}  # and its storage class, checksum type and algorithms
    objects = []
    for key, modified, etag, algorithms, kind, size, storage in rows:
        if modified not in stamps:
            stamps[modified] = _timestamp(modified)
        etag = etag.replace("&quot;", '"')  # each S3 ETag's quotes
        item = {
            "Key": key if "&" not in key and "\r" not in key else _text(key),
            "LastModified": stamps[modified],
            "ETag": etag if "&" not in etag and "\r" not in etag else _text(etag),
        }
        if algorithms:
            if algorithms not in shared:
                shared[algorithms] = _ALGORITHM.findall(algorithms)
            item["ChecksumAlgorithm"] = list(shared[algorithms])
        if kind is not None:
            item["ChecksumType"] = shared[kind] if kind in shared else _text(kind, shared)
        item["Size"] = int(size)
        if storage is not None:
            item["StorageClass"] = shared[storage] if storage in shared else _text(storage, shared)
        objects.append(item)
    return objects


def _in_utf8(body: bytes) -> bool:
    """Whether the page's XML declaration, if any, names no encoding other than UTF-8."""
    declared = body[: body.find(b"?>")].lower() if body.startswith(b"<?xml") else b""
    return b"encoding" not in declared or b"utf-8" in declared


def _text(raw: str, shared: dict | None = None) -> str:
    """An element's text as an XML parser gives it: its references resolved, its line ends
    made ``\\n`` (rare in a listing but for an ETag's quotes: left to ElementTree). Kept in
    ``shared`` when given."""
    text = raw
    if "&" in raw or "\r" in raw:
        text = ElementTree.fromstring(f"<t>{raw}</t>").text or ""
    if shared is not None:
        shared[raw] = text
    return text


def _walked(body: bytes) -> tuple[bytes, list[dict]] | None:
    """(the page without its objects, the objects) from ElementTree's parse and a walk over
    each object's fields; None when botocore is to read the page whole (no objects, a field
    not read here, objects in another namespace). ParseError for a page cut short or an
    ``<Error>``."""
    root = ElementTree.fromstring(body)
    if root.tag == "Error":  # S3's error under a 200: retried, as botocore's check would
        raise ElementTree.ParseError("S3 error under a 200")
    if b"<Contents>" not in body:
        return None
    ns = root.tag[: root.tag.find("}") + 1]  # "{http://s3.amazonaws.com/doc/2006-03-01/}"
    contents, rest, objects, cut = f"{ns}Contents", [], [], len(ns)
    stamps: dict[str, Any] = {}
    for node in root:
        if node.tag != contents:
            rest.append(node)
            continue
        item: dict[str, Any] = {}
        for field in node:
            name, text = field.tag[cut:], field.text or ""
            if name in _TEXT_FIELDS:
                item[name] = text
            elif name == "Size":
                item[name] = int(text)
            elif name == "LastModified":
                if text not in stamps:
                    stamps[text] = _timestamp(text)
                item[name] = stamps[text]
            elif name == "ChecksumAlgorithm":  # a flattened list: one element per algorithm
                item.setdefault(name, []).append(text)
            else:
                return None
        objects.append(item)
    if not objects:  # its objects are in another namespace: botocore's to read
        return None
    root[:] = rest
    return ElementTree.tostring(root), objects


def version_aware(fs: Any) -> bool:
    return bool(getattr(fs, "version_aware", False))


def folder_listing(fs: Any, path: str, prefix: str, every_version: bool) -> dict[str, list]:
    """``{name: [info, ...]}`` of the objects directly in the folder ``path`` whose names start
    with ``prefix``, from a fresh listing (``folder_objects``)."""
    by_name: dict[str, list[dict]] = {}
    for info in folder_objects(fs, path, prefix, every_version):  # each Key without a version
        by_name.setdefault(info["Key"].rpartition("/")[2], []).append(info)
    return by_name


def folder_objects(fs: Any, path: str, prefix: str, every_version: bool) -> list[dict]:
    """``info()``-like dicts of the objects (no folders) directly in the folder ``path`` whose
    names start with ``prefix``, in key order, from a fresh listing: ListObjectsV2 when the
    bucket was never versioned, else its object versions (the latest, or every one with
    ``every_version``)."""
    bucket, folder, _ = fs.split_path(path)
    prefix = f"{folder}/{prefix}" if folder else prefix
    infos = None if every_version else _listing_if_never_versioned(fs, bucket, prefix)
    if infos is None:
        infos = objects(fs, bucket, prefix, None, version_aware(fs), every_version)
    return infos


def _listing_if_never_versioned(fs: Any, bucket: str, prefix: str) -> list[dict] | None:
    """The folder's objects from ListObjectsV2 when its bucket was never versioned, else None
    (to list object versions). A never-versioned bucket's objects have no VersionId, so both
    listings give the same versions (ETags) and sizes, and ListObjectsV2 is the lighter one
    (moto's ListObjectVersions takes time in proportion to the objects' bytes: 2.5 s for 32
    shards of 10 MB, against 0.05 s). The bucket's versioning is asked at the same time, so
    it costs no round trip; a bucket seen versioned (or whose versioning may not be asked) is
    not asked again in this process."""
    seen = (id(fs), bucket)
    if not version_aware(fs) or seen in _VERSIONED_BUCKETS:
        return None
    pool, answered, plain = ThreadPoolExecutor(1), threading.Event(), [False]

    def wanted() -> bool:  # past the first page: once the versioning says which listing
        answered.wait()
        return plain[0]

    try:
        listing = pool.submit(objects, fs, bucket, prefix, wanted)
        try:
            status = fs.call_s3("get_bucket_versioning", Bucket=bucket).get("Status")
        except Exception:  # noqa: BLE001 - not allowed to ask: list versions, as before
            status = "unknown"
        plain[0] = status is None
        answered.set()  # the plain listing goes on past its first page, or stops there
        if not plain[0]:
            _VERSIONED_BUCKETS.add(seen)
            return None
        return listing.result()
    finally:
        answered.set()  # never left waiting (plain[0] is False unless the answer said so)
        pool.shutdown(wait=False)


def objects(
    fs: Any,
    bucket: str,
    prefix: str,
    wanted: Callable[[], bool] | None = None,
    versions: bool = False,
    every_version: bool = False,
    *,
    recursive: bool = False,
    call: Callable[..., dict] | None = None,
    ranges: int | None = None,
) -> list[dict]:
    """``info()``-like dicts (Key with the bucket, size, ETag) of the objects directly under
    ``prefix`` (every object under it with ``recursive``), in key order, as s3fs's ``find``
    gives them. From ListObjectsV2: the first page, then the rest of the folder in numbered
    or hashed ranges at once (``LIST_RANGES``), or page after page when the names are
    neither. With ``versions``, from ListObjectVersions, page after page: each object's
    latest version, or with ``every_version`` each of its versions. Past the first page only
    if ``wanted()`` says so (None: it is). ``call(method, **kwargs)`` asks S3 for one page
    (default: ``fs.call_s3``); ``ranges`` caps the ranges (default ``LIST_RANGES``)."""
    pages = _Pages(fs, bucket, prefix, versions, every_version, recursive, call)
    connect = getattr(fs, "connect", None)  # s3fs makes its client on the first request:
    if callable(connect):  # not part of what a page takes (0.1-1 s in a fresh process)
        connect()
    started = time.monotonic()
    first = pages.call({})
    most = ranges or LIST_RANGES
    pages.at_once = max(1, min(most, int(LIST_BUDGET_S / max(time.monotonic() - started, 1e-3))))
    infos = pages.infos(first)
    keys = [item["Key"] for item in first.get(pages.items, ())]
    if not first.get("IsTruncated") or (wanted is not None and not wanted()):
        return infos
    last = _last_name(first)  # no range may start before it: its keys are listed
    scale = cuts = None
    if _rangeable(bucket, keys, versions):
        if hashed := _hashed(keys[0], keys[-1]):  # first: a hash may start with digits
            scale = _Scale(*hashed, 16, keys[0], keys[-1], _listed(first))
            cuts = scale.hash_cuts(last)
        elif numbered := _numbered(keys[0], keys[-1]):
            scale = _Scale(*numbered[:2], 10, keys[0], keys[-1], _listed(first))
            cuts = pages.cuts(*numbered)
    cuts = _fewer([c for c in cuts or () if c >= last], most - 1)
    if scale is None or not cuts:  # pages after the first, in order
        return infos + pages.between(pages.onward(first), None, None)
    # the first range goes on from where the first page stopped, each other after its cut;
    # the last holds what is past the numbers or hashes (nothing expected of it)
    starts = [pages.onward(first), *({"StartAfter": c} for c in cuts)]
    expected = [scale.between(lo, hi) for lo, hi in zip([last, *cuts[:-1]], cuts)] + [None]
    spans = list(zip(starts, [last, *cuts], [*cuts, None], expected))
    failed = threading.Event()  # one range failed: the others stop at their next page

    def listed(span: tuple) -> list[dict]:
        try:
            return pages.between(*span, stop=failed)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(min(len(spans), pages.at_once), "driftloader-list") as pool:
        parts = list(pool.map(listed, spans))
    return infos + [info for part in parts for info in part]


class _Scale:
    """Where a name falls among numbered or hashed names, and how many keys lie between two
    names at the density of the first page (``listed`` entries from ``first`` to ``last``).

    A name's position is the number its ``width`` digits after ``head`` make in ``base``;
    for hashes, plus the fraction the next hex digits make (past a "/": the hash inside a
    fan-out folder such as ``shards/ab/<sha1>``), so a first page inside one folder still
    tells how many keys a folder holds."""

    def __init__(self, head: str, width: int, base: int, first: str, last: str, listed: int):
        self.head, self.width, self.base = head, width, base
        span = self.position(last) - self.position(first)
        # numbers: the first page held every number from first to last; hashes: a stretch
        self.per_unit = listed / (span + 1 if base == 10 else max(span, 16.0**-_HASH_DIGITS))

    def position(self, name: str) -> float:
        at = len(self.head) + self.width
        try:
            whole = int(name[len(self.head) : at], self.base)
        except ValueError:
            return 0.0
        if self.base == 10:
            return float(whole)
        rest = name[at + 1 :] if name[at : at + 1] == "/" else name[at:]
        digits = ""
        for char in rest[:_HASH_DIGITS]:
            if char not in _HEX:
                break
            digits += char
        return whole + (
            int(digits.ljust(_HASH_DIGITS, "0"), 16) / 16**_HASH_DIGITS if digits else 0
        )

    def between(self, lo: str, hi: str) -> int:
        """Keys expected after ``lo`` up to ``hi``."""
        return max(round((self.position(hi) - self.position(lo)) * self.per_unit), 0)

    def hash_cuts(self, last: str) -> list[str]:
        """Names, ascending, cutting the hash values after ``last`` (the first page's last
        name) into ranges of about a ``LIST_PAGE_KEYS`` page or more each, at most
        ``LIST_RANGES``: hashes are spread evenly."""
        top, here = 16**self.width, self.position(last)
        left = (top - here) * self.per_unit  # keys expected after the first page
        parts = max(1, min(LIST_RANGES, -(-int(left) // LIST_PAGE_KEYS)))
        low = int(here) + 1
        values = sorted({low + (top - low) * j // parts for j in range(1, parts)})
        return [self.head + format(v, f"0{self.width}x") for v in values if v < top]


def _listed(page: dict) -> int:
    """Entries a page of a listing holds (``MaxKeys`` counts objects and common prefixes)."""
    return sum(len(page.get(kind, ())) for kind in (*_KEYED, "CommonPrefixes"))


def _rangeable(bucket: str, keys: list[str], versions: bool) -> bool:
    """Whether the rest of a listing whose first page holds ``keys`` may go in ranges: not
    for versions (moto's ListObjectVersions skips the first key after a ``KeyMarker`` that is
    no key, so that could not be tested), nor for a store that does not list in key order
    (S3 Express directory buckets, named ``--x-s3``, which take no ``StartAfter`` either)."""
    if versions or len(keys) < 2 or bucket.endswith("--x-s3"):
        return False
    return all(a < b for a, b in zip(keys, keys[1:]))


def _runs(first: str, last: str, chars: frozenset) -> tuple[int, int, int, int]:
    """``(i, start, in_first, in_last)``: where ``first`` and ``last`` first differ, where
    the run of ``chars`` holding that place in ``last`` starts, and how long that run is in
    each name (from ``start``)."""
    i = len(os.path.commonprefix([first, last]))
    start = i
    while start > 0 and last[start - 1] in chars:
        start -= 1

    def run(name: str) -> int:
        end = start
        while end < len(name) and name[end] in chars:
            end += 1
        return end - start

    return i, start, run(first), run(last)


def _numbered(first: str, last: str) -> tuple[str, int, int] | None:
    """``(head, width, number)`` of the number ``last`` holds where it first differs from
    ``first``, when both hold a number of that width there (fixed-width names); else None."""
    i, start, in_first, width = _runs(first, last, _DIGITS)
    if width <= i - start or in_first != width:  # they differ past the number, or widths do
        return None
    return last[:start], width, int(last[start : start + width])


def _fewer(cuts: list[str], most: int) -> list[str]:
    """At most ``most`` of ``cuts``, spread evenly among them (ranges of about equal size)."""
    if len(cuts) <= most:
        return cuts
    return [cuts[(j * len(cuts)) // (most + 1)] for j in range(1, most + 1)] if most > 0 else []


def _hashed(first: str, last: str) -> tuple[str, int] | None:
    """``(head, width)``: where to cut hashed names (the ``width`` hex digits after
    ``head``), when ``first`` and ``last`` differ within a run of lowercase hex digits both
    hold at the same place: a hash (16 digits or more: a sha1 has 40, an md5 32; no shard
    number is that wide), cut by its first ``_HASH_DIGITS``, or a fan-out folder of 1-4 hex
    digits (``shards/ab/``), cut by its name. A hash inside a fan-out folder named by its
    first digits, which the first page did not leave, is cut at the folder, not inside it."""
    i, start, in_first, in_last = _runs(first, last, _HEX)
    width = min(in_first, in_last)
    if i >= start + width:
        return None
    after = {first[start + width : start + width + 1], last[start + width : start + width + 1]}
    if in_first == width == in_last <= 4 and after == {"/"}:
        return last[:start], width
    if width < 16 or i >= start + _HASH_DIGITS:
        return None
    return _fan_out(last, start) or (last[:start], _HASH_DIGITS)


def _fan_out(name: str, start: int) -> tuple[str, int] | None:
    """``(head, width)`` of the folder just before ``start`` in ``name`` when it is named by
    the first 1-4 digits of the hash at ``start`` (``shards/ab/ab12...``, a store's layout)."""
    if start < 2 or name[start - 1] != "/":
        return None
    folder = name.rfind("/", 0, start - 1) + 1
    digits = name[folder : start - 1]
    if 1 <= len(digits) <= 4 and name.startswith(digits, start) and _HEX.issuperset(digits):
        return name[:folder], len(digits)
    return None


class _Pages:
    """Pages of one prefix's listing, with ``Delimiter="/"`` (its folder's own objects) unless
    ``recursive``."""

    def __init__(
        self,
        fs: Any,
        bucket: str,
        prefix: str,
        versions: bool,
        every_version: bool,
        recursive: bool = False,
        call: Callable[..., dict] | None = None,
    ) -> None:
        self.fs, self.bucket, self.prefix = fs, bucket, prefix
        self.versions, self.every_version = versions, every_version
        self.method = "list_object_versions" if versions else "list_objects_v2"
        self.items = "Versions" if versions else "Contents"
        self._folder = {} if recursive else {"Delimiter": "/"}
        self._call = call or fs.call_s3
        self.at_once = LIST_RANGES  # requests in flight at once (``LIST_BUDGET_S``)

    def call(self, kwargs: dict, keys: int | None = None) -> dict:
        return self._call(
            self.method,
            Bucket=self.bucket,
            Prefix=self.prefix,
            MaxKeys=keys or LIST_PAGE_KEYS,
            **self._folder,
            **kwargs,
        )

    def onward(self, page: dict) -> dict:
        """The keywords of the page after ``page``."""
        if self.versions:
            return {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "VersionIdMarker": page.get("NextVersionIdMarker", ""),
            }
        return {"ContinuationToken": page["NextContinuationToken"]}

    def infos(self, page: dict, lo: str | None = None, hi: str | None = None) -> list[dict]:
        """The page's objects after ``lo`` up to ``hi`` (None: no bound), as s3fs's
        ``info()`` gives them: of versions, the latest unless ``every_version``."""
        bucket, every = self.bucket, not self.versions or self.every_version
        return [
            {**item, "Key": f"{bucket}/{item['Key']}", "size": item.get("Size")}
            for item in page.get(self.items, ())
            if (lo is None or item["Key"] > lo)
            and (hi is None or item["Key"] <= hi)
            and (every or item.get("IsLatest"))
        ]

    def between(
        self,
        start: dict,
        lo: str | None,
        hi: str | None,
        expected: int | None = None,
        stop: threading.Event | None = None,
    ) -> list[dict]:
        """The objects from the listing ``start`` (keywords), after ``lo`` up to ``hi``
        (None: no bound), page after page. The bounds keep a store that ignores
        ``StartAfter`` from giving a key twice: it costs time, not a key. With ``expected``
        keys up to ``hi``, the page that should reach it asks for a few more than are left
        rather than a whole page past ``hi`` (read and thrown away); a wrong guess costs
        a page more or a few keys more, never a key. Once ``stop`` is set (another range
        failed), no page more is asked for: what this range has is thrown away."""
        out: list[dict] = []
        kwargs, listed = start, 0
        margin = None if expected is None else 8 + expected // 20
        while stop is None or not stop.is_set():
            keys = None
            if margin is not None and 0 < expected - listed + margin < LIST_PAGE_KEYS:
                keys = expected - listed + margin
            page = self.call(kwargs, keys)
            out += self.infos(page, lo, hi)
            listed += _listed(page)
            if not page.get("IsTruncated") or (hi is not None and _last_name(page) > hi):
                break
            kwargs = self.onward(page)
        return out

    def cuts(self, head: str, width: int, number: int) -> list[str]:
        """Names, ascending, cutting the numbers after ``number`` into up to ``LIST_RANGES``
        ranges of equal size, below a bound found by probing (one key each) where the
        numbered names end: at each power of ten, then at each tenth of the decade that
        holds the end."""
        top = 10**width

        def name(value: int) -> str:  # a key numbered ``value`` sorts after it, lower before
            return head + str(value).zfill(width)

        def exists(value: int) -> bool:  # a numbered name at or after ``value``
            page = self.call({"StartAfter": name(value)}, keys=1)
            found = [i["Key"] for i in page.get("Contents", ())]
            found += [p["Prefix"] for p in page.get("CommonPrefixes", ())]
            key = min(found, default="")
            run = key[len(head) : len(head) + width]
            return key.startswith(head) and len(run) == width and _DIGITS.issuperset(run)

        end = _first_false(
            [10**k for k in range(1, width) if number < 10**k], exists, top, self.at_once
        )
        tenth = max(end // 10, 1)
        end = _first_false(
            [tenth * d for d in range(2, 10) if number < tenth * d < end],
            exists,
            end,
            self.at_once,
        )
        span = end - number - 1  # the numbers left: after ``number``, below ``end``
        parts = max(1, min(LIST_RANGES - 1, -(-span // LIST_PAGE_KEYS)))
        values = {number + 1 + span * j // parts for j in range(1, parts)} | {end}
        return [name(v) for v in sorted(values) if number < v < top]  # each of ``width`` digits


def _first_false(values: list[int], exists, default: int, at_once: int) -> int:
    """The first of ``values`` (ascending) that ``exists`` says no to, asked ``at_once``."""
    if not values:
        return default
    with ThreadPoolExecutor(min(len(values), at_once), "driftloader-list") as pool:
        answers = list(pool.map(exists, values))
    return next((v for v, yes in zip(values, answers) if not yes), default)


_KEYED = ("Contents", "Versions", "DeleteMarkers")


def _last_name(page: dict) -> str:
    """The last key or common prefix the page holds (each kind comes in key order)."""
    last = [page[kind][-1]["Key"] for kind in _KEYED if page.get(kind)]
    if page.get("CommonPrefixes"):
        last.append(page["CommonPrefixes"][-1]["Prefix"])
    return max(last, default="")
