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

Each ListObjectsV2 page is a GET presigned by s3fs's client and sent from the thread that
asks for it (``_SignedPages``), read by ``listing_pages``; botocore asks for what those GETs
do not bring.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .listing_pages import signed_page

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
Shape = Callable[[list[dict]], list]  # a page's objects, as botocore gives them: what to list
_VERSIONED_BUCKETS: set[tuple[int, str]] = set()
"""(id of a cached filesystem, bucket) of buckets seen versioned: once enabled, S3 versioning
can be suspended but never removed, so this never goes stale."""


def version_aware(fs: Any) -> bool:
    return bool(getattr(fs, "version_aware", False))


def folder_listing(fs: Any, path: str, prefix: str, every_version: bool) -> dict[str, list]:
    """``{name: [info, ...]}`` of the objects directly in the folder ``path`` whose names start
    with ``prefix``, from a fresh listing (``folder_objects``)."""
    by_name: dict[str, list[dict]] = {}
    for info in folder_objects(fs, path, prefix, every_version):  # each Key without a version
        by_name.setdefault(info["Key"].rpartition("/")[2], []).append(info)
    return by_name


def folder_objects(
    fs: Any, path: str, prefix: str, every_version: bool, shape: Shape | None = None
) -> list:
    """``info()``-like dicts of the objects (no folders) directly in the folder ``path`` whose
    names start with ``prefix``, in key order, from a fresh listing: ListObjectsV2 when the
    bucket was never versioned, else its object versions (the latest, or every one with
    ``every_version``). With ``shape``, what it makes of each page's objects (``objects``)."""
    bucket, folder, _ = fs.split_path(path)
    prefix = f"{folder}/{prefix}" if folder else prefix
    infos = None if every_version else _listing_if_never_versioned(fs, bucket, prefix, shape)
    if infos is None:
        infos = objects(fs, bucket, prefix, None, version_aware(fs), every_version, shape=shape)
    return infos


def _listing_if_never_versioned(
    fs: Any, bucket: str, prefix: str, shape: Shape | None = None
) -> list | None:
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
        listing = pool.submit(objects, fs, bucket, prefix, wanted, shape=shape)
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
    shape: Shape | None = None,
) -> list:
    """``info()``-like dicts (Key with the bucket, size, ETag) of the objects directly under
    ``prefix`` (every object under it with ``recursive``), in key order, as s3fs's ``find``
    gives them. From ListObjectsV2: the first page, then the rest of the folder in numbered
    or hashed ranges at once (``LIST_RANGES``), or page after page when the names are
    neither. With ``versions``, from ListObjectVersions, page after page: each object's
    latest version, or with ``every_version`` each of its versions. Past the first page only
    if ``wanted()`` says so (None: it is). ``call(method, **kwargs)`` asks S3 for one page
    (default: ``_SignedPages``'s, else ``fs.call_s3``); ``ranges`` caps the ranges (default
    ``LIST_RANGES``). ``shape(objects)``, when given, is called with each page's objects as
    botocore gives them (Key without the bucket, Size), as the pages come, on the thread that
    listed them, and what it returns is listed in place of their ``info()`` dicts: the
    listing's own threads then do the work a caller would do after the last page."""
    signed = _SignedPages.of(fs, bucket) if call is None and not versions else None
    try:
        pages = _Pages(
            fs, bucket, prefix, versions, every_version, recursive, signed or call, shape
        )
        return _listed_in_ranges(pages, wanted, ranges)
    finally:
        if signed is not None:
            signed.close()


def _listed_in_ranges(pages: _Pages, wanted: Callable[[], bool] | None, ranges: int | None) -> list:
    """``objects``' listing, from its first page (see there)."""
    fs, bucket, versions = pages.fs, pages.bucket, pages.versions
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

    def listed(span: tuple) -> list:
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


class _SignedPages:
    """``call(method, **kwargs)`` asking S3 for a ListObjectsV2 page by a presigned GET from
    the calling thread (``presign.SignedGets``: ~0.2 ms of CPU a request, against ~1.3 ms on
    botocore's path, on s3fs's one loop thread: ~0.15 s of a glob of 100k keys), read by
    ``listing_pages.signed_page``. botocore asks (``fs.call_s3``, with its retries and
    errors) for any other call, for a page whose GET failed or whose body it is to read,
    and, once S3 has refused a presigned page (another region, credentials), for every page
    after it."""

    def __init__(self, fs: Any, gets: Any) -> None:
        self.fs, self.gets, self.refused = fs, gets, False

    @classmethod
    def of(cls, fs: Any, bucket: str) -> _SignedPages | None:
        """Signed pages of ``bucket`` when ``fs`` is s3fs's and presigned requests send what
        its client would (``presign.serves``); else None."""
        if not callable(getattr(fs, "call_s3", None)) or not hasattr(fs, "set_session"):
            return None
        from driftloader import presign

        try:
            return cls(fs, presign.SignedGets(fs, bucket)) if presign.serves(fs) else None
        except Exception:  # noqa: BLE001 - no signing here: botocore asks, and says why
            return None

    def __call__(self, method: str, **kwargs: Any) -> dict:
        if method == "list_objects_v2" and not self.refused:
            try:
                status, body = self.gets.get(method, {**kwargs, "EncodingType": "url"})
            except (OSError, http.client.HTTPException):
                status, body = 0, b""  # botocore asks again, and retries
            page = signed_page(body) if status == 200 else None
            if page is not None:
                return page
            self.refused = status not in (0, 200)
        return self.fs.call_s3(method, **kwargs)

    def close(self) -> None:
        self.gets.close()


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
        shape: Shape | None = None,
    ) -> None:
        self.fs, self.bucket, self.prefix = fs, bucket, prefix
        self.versions, self.every_version = versions, every_version
        self.method = "list_object_versions" if versions else "list_objects_v2"
        self.items = "Versions" if versions else "Contents"
        self._folder = {} if recursive else {"Delimiter": "/"}
        self._call = call or fs.call_s3
        self.at_once = LIST_RANGES  # requests in flight at once (``LIST_BUDGET_S``)
        self.shape = shape  # what a page's objects are listed as (``objects``)

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

    def infos(self, page: dict, lo: str | None = None, hi: str | None = None) -> list:
        """The page's objects after ``lo`` up to ``hi`` (None: no bound), as s3fs's
        ``info()`` gives them (or as ``shape`` makes them): of versions, the latest unless
        ``every_version``."""
        items, every = page.get(self.items, ()), not self.versions or self.every_version
        if lo is not None or hi is not None or not every:
            items = [
                item
                for item in items
                if (lo is None or item["Key"] > lo)
                and (hi is None or item["Key"] <= hi)
                and (every or item.get("IsLatest"))
            ]
        if self.shape is not None:
            return self.shape(items)
        bucket = self.bucket
        return [
            {**item, "Key": f"{bucket}/{item['Key']}", "size": item.get("Size")} for item in items
        ]

    def between(
        self,
        start: dict,
        lo: str | None,
        hi: str | None,
        expected: int | None = None,
        stop: threading.Event | None = None,
    ) -> list:
        """The objects from the listing ``start`` (keywords), after ``lo`` up to ``hi``
        (None: no bound), page after page. The bounds keep a store that ignores
        ``StartAfter`` from giving a key twice: it costs time, not a key. With ``expected``
        keys up to ``hi``, the page that should reach it asks for a few more than are left
        rather than a whole page past ``hi`` (read and thrown away); a wrong guess costs
        a page more or a few keys more, never a key. Once ``stop`` is set (another range
        failed), no page more is asked for: what this range has is thrown away."""
        out: list = []
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
