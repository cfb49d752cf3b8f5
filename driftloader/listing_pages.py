"""A page of an S3 listing read quickly: botocore's parse of a ListObjectsV2 page of 1,000
keys costs ~20 ms of CPU (its shape walk, dateutil's timestamps, a second parse to look for an
error under a 200), 2 s over a listing of 100k shards. On our sessions (``quick_timestamps``)
the page's objects are read by one regular expression where the page is laid out as S3 and
moto write it (``_scanned``), by ElementTree otherwise (``_walked``), and botocore reads the
rest. ``signed_page`` reads a whole page fetched without botocore (``listing``'s presigned
pages), or says that botocore is to read it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree


def quick_timestamps(fs: Any, credentials: Hashable = None) -> None:
    """Give an s3fs filesystem (before its first request) a session whose responses parse ISO
    8601 timestamps with Python's own parser: botocore's takes ~40 us for each object's
    ``LastModified`` (dateutil), ~40 of the ~90 ms a page of 1,000 keys costs to read here.
    Other forms go to botocore's parser. Its listings' objects are read by ``quick_objects``.
    Left as it is if it has a session already.

    Filesystems of this process with the same session settings (``fs.kwargs``) and
    ``credentials`` (what the environment says of them) share one session: the shards' and
    the store's filesystems differ in their client settings only, and a session holds
    botocore's loaded models, so the second client is made without loading them again (~0.06
    s). A session resolves the environment's credentials once: other ``credentials``, other
    session."""
    kwargs = getattr(fs, "kwargs", None)
    if getattr(fs, "session", True) is not None or not isinstance(kwargs, dict):
        return
    key = (os.getpid(), json.dumps(kwargs, sort_keys=True, default=repr), credentials)
    session = _SESSIONS.get(key)
    if session is None:
        session = _SESSIONS[key] = _quick_session(kwargs)
    fs.session = session
    if hasattr(fs, "_session_is_owned"):  # kept when s3fs refreshes or closes its client
        fs._session_is_owned = False


_SESSIONS: dict[tuple, Any] = {}  # (pid, session settings, credentials): quick_timestamps


def _quick_session(kwargs: dict) -> Any:
    import aiobotocore.session

    session = aiobotocore.session.AioSession(**kwargs)  # what s3fs would make
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=_timestamp)
    session.register("before-parse.s3.ListObjectsV2", quick_objects)
    _one_parse_per_listing(session)
    return session


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


_URL_ENCODED = (("Contents", "Key"), ("CommonPrefixes", "Prefix"))


def signed_page(body: bytes) -> dict | None:
    """A ListObjectsV2 page (the body of a 200) as botocore gives it, its objects read as
    ``quick_objects`` reads them and its names decoded when the page says it is
    ``EncodingType=url``; None when botocore is to read it: an error, a page cut short, a
    layout the scan does not read, or a field not read here."""
    read = _scanned(body) if b"<Contents>" in body else (body, [])
    if read is None:
        return None
    rest, contents = read
    try:
        root = ElementTree.fromstring(rest)
    except ElementTree.ParseError:
        return None
    ns = root.tag[: root.tag.find("}") + 1]
    if root.tag != f"{ns}ListBucketResult":
        return None
    page: dict[str, Any] = {"Contents": contents} if contents else {}
    for node in root:
        name = node.tag[len(ns) :]
        if name == "CommonPrefixes":
            prefix = node.find(f"{ns}Prefix")
            if prefix is None or len(node) != 1:
                return None
            page.setdefault(name, []).append({"Prefix": prefix.text or ""})
        elif len(node) or name == "Contents":  # a field of fields not read here
            return None
        elif name == "IsTruncated":
            page[name] = node.text == "true"
        elif name in ("KeyCount", "MaxKeys"):
            page[name] = int(node.text or 0)
        else:
            page[name] = node.text or ""
    if page.get("EncodingType") == "url":  # as botocore's decode_list_object_v2
        for kind, field in _URL_ENCODED:
            for item in page.get(kind, ()):
                if "%" in item[field] or "+" in item[field]:  # most names have neither
                    item[field] = unquote_plus(item[field])
        for field in ("Delimiter", "Prefix", "StartAfter"):
            if field in page:
                page[field] = unquote_plus(page[field])
    return page
