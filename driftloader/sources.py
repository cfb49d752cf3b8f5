"""Shard sources: URL expansion, fsspec resolution per process, and shard versions."""

from __future__ import annotations

import fnmatch
import gc
import json
import operator
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from stat import S_ISREG
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .braces import braceexpand
from .errors import (
    DriftloaderError,
    NoShardsError,
    ShardReadError,
    StorageUnreachable,
    VersionMismatch,
)
from .listing import folder_listing, folder_objects, version_aware
from .listing_pages import quick_timestamps
from .shardversion import ShardVersion, file_version

MANIFEST_SUFFIXES = (".json", ".txt", ".lst", ".manifest")
LISTING_TRUSTED_S = 300.0
"""Seconds a glob's listing is taken as the shards' versions (``Shard.listed``): the dataset,
``check`` and ``profile`` stat a glob's shards right after listing them; a list of shards kept
longer (``expand_urls`` or ``shards_for`` in a user's hands) is listed again when stat'ed."""


@dataclass(frozen=True)
class Shard:
    """One shard: its URL, a version string that changes when its bytes change, and its size.

    ``pinned`` is True when the version comes from a snapshot manifest: reads must then return
    exactly those bytes or fail. ``listed`` is when (``time.time()``) the version and size came
    from a glob's listing (or a stat a command just made), 0 when they did not: ``stat_shards``
    takes them as they are for ``LISTING_TRUSTED_S`` after it (and clears it), instead of
    listing again; kept longer, the shard is listed again.
    """

    url: str
    version: str | None = None
    size: int | None = None
    pinned: bool = False
    listed: float = field(default=0.0, compare=False, repr=False)

    @property
    def parsed_version(self) -> ShardVersion | None:
        """The version as a ``ShardVersion`` (None when unknown)."""
        return ShardVersion.parse(self.version)


# ---------------------------------------------------------------------------- filesystems

_FS_CACHE: dict[tuple, Any] = {}
CONNECT_TIMEOUT = 3
"""Seconds to open a connection to S3 (botocore's default is 60): a wrong or firewalled
endpoint then fails in seconds, where S3 itself connects in milliseconds."""
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def is_pipe(url: str) -> bool:
    """True for webdataset's ``pipe:COMMAND`` URLs (the shard is the command's stdout)."""
    return url.startswith("pipe:")


_PROTOCOL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def local_path(url: str) -> str:
    """The filesystem path of a local URL (``file://`` stripped)."""
    return url[len("file://") :] if url.startswith("file://") else url


def protocol_of(url: str) -> str:
    """The fsspec protocol of a URL; plain paths are ``file``."""
    match = _PROTOCOL.match(url)
    return match.group(1).lower() if match else "file"


def _s3_options(storage_options: dict | None) -> dict:
    """s3fs options, taking the endpoint from ``AWS_ENDPOINT_URL`` when the caller gave none."""
    options = dict(storage_options or {})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client_kwargs = dict(options.get("client_kwargs") or {})
    if endpoint and "endpoint_url" not in options and "endpoint_url" not in client_kwargs:
        client_kwargs["endpoint_url"] = endpoint
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    options.setdefault("version_aware", True)
    config = dict(options.get("config_kwargs") or {})
    # botocore's own retries would hide failures from ours (which count them and resume at
    # the byte) and multiply the time a dead endpoint takes to fail; s3fs retries its calls.
    config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    config.setdefault("connect_timeout", CONNECT_TIMEOUT)
    config.setdefault("read_timeout", 20)
    config.setdefault("max_pool_connections", 48)  # the reader keeps requests in flight
    options["config_kwargs"] = config
    return options


def filesystem(url: str, storage_options: dict | None = None):
    """The fsspec filesystem for ``url``, cached per process (never shared across a fork)."""
    protocol = protocol_of(url)
    options = (
        _s3_options(storage_options) if protocol in ("s3", "s3a") else dict(storage_options or {})
    )
    # credentials from the environment are resolved once per filesystem: a changed
    # environment (another profile, new keys) gets a new one
    credentials = hash(tuple(os.environ.get(name) for name in _CREDENTIAL_VARIABLES))
    key = (os.getpid(), protocol, json.dumps(options, sort_keys=True, default=repr), credentials)
    fs = _FS_CACHE.get(key)
    if fs is None:
        try:
            fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
            if protocol in ("s3", "s3a"):
                quick_timestamps(fs, credentials)
        except (ValueError, ImportError) as e:  # unknown protocol, or its package missing
            raise ValueError(f"cannot open {redact(url)}: {e}") from e
        except TypeError as e:  # an option the filesystem does not take
            raise ValueError(
                f"cannot open {redact(url)} with storage options {sorted(options)}: {e}"
            ) from e
        _FS_CACHE[key] = fs
    return fs


def read_small(url: str, storage_options: dict | None = None) -> bytes:
    """The bytes of a small file (a sidecar, a manifest): on S3 one GET, where s3fs's
    ``cat_file`` asks the object's size first to split a large read. FileNotFoundError when
    there is none."""
    fs = filesystem(url, storage_options)
    single = {"max_concurrency": 1} if protocol_of(url) in ("s3", "s3a") else {}
    return fs.cat_file(fs._strip_protocol(url), **single)


def strip_protocol(url: str, storage_options: dict | None = None) -> str:
    """The path of ``url`` inside its filesystem."""
    return filesystem(url, storage_options)._strip_protocol(url)


_CONNECT_FAILURES = {
    "EndpointConnectionError",  # botocore: DNS failure, refused
    "ConnectTimeoutError",  # botocore: no answer to the connection attempt
    "ConnectionTimeoutError",  # aiohttp's name for the same
    "ClientConnectorError",  # aiohttp: DNS failure, refused
    "ConnectionRefusedError",
    "gaierror",
}


def is_connect_failure(exc: BaseException) -> bool:
    """True when no connection was made at all (wrong or firewalled endpoint, no DNS): an
    error worth one retry, not five, while the endpoint has never answered."""
    return any(cls.__name__ in _CONNECT_FAILURES for cls in type(exc).__mro__)


def storage_hint(exc: BaseException) -> str:
    """What to check when storage cannot be reached or does not know who we are; else ``""``."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return (
            "; no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE / ~/.aws/credentials), pass storage_options={'key': ..., "
            "'secret': ...}, or storage_options={'anon': True} for a public bucket"
        )
    if names & {"EndpointConnectionError", "ConnectTimeoutError"}:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        where = (
            f"the endpoint {endpoint} (from AWS_ENDPOINT_URL)"
            if endpoint
            else "AWS's public endpoint (AWS_ENDPOINT_URL is not set)"
        )
        return (
            f"; cannot connect to {where}: set AWS_ENDPOINT_URL, or pass "
            "storage_options={'client_kwargs': {'endpoint_url': ...}}"
        )
    if names & {"ClientConnectorError", "ConnectionRefusedError"}:
        return "; cannot connect to the server (is the host and port right, is it running?)"
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSLCertVerificationError" in names:
        return (
            "; the server's certificate is not trusted: give its CA bundle as AWS_CA_BUNDLE or "
            "storage_options={'client_kwargs': {'verify': '/path/to/ca.pem'}}"
        )
    return ""


def redact(url: str) -> str:
    """A URL without credentials (``scheme://user:secret@host`` -> ``scheme://***@host``)."""
    if "@" not in url:  # the common case, without a regex (catalogs redact 100k URLs)
        return url
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]+@", r"\1***@", url)


# ------------------------------------------------------------------------------ expansion


def expand_urls(urls: str | Sequence[str], storage_options: dict | None = None) -> list[Shard]:
    """Expand brace patterns, globs, lists and manifest files into shards, in the given order.

    A string may also be webdataset's ``"a.tar::b-{0..3}.tar"``: a list of URLs or patterns
    separated by ``::`` (left whole when it starts with an fsspec protocol name such as
    ``simplecache::``, as fsspec's URL chaining does). Raises ``NoShardsError`` naming the
    pattern when something expands to nothing.
    """
    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    if not items:
        raise NoShardsError("no shard URLs given")
    shards: list[Shard] = []
    for item in items:
        for pattern in split_url_list(os.fspath(item)):
            shards.extend(_expand_one(pattern, storage_options))
    return shards


def shards_of(
    urls: str | Sequence[str] | Sequence[Shard], storage_options: dict | None = None
) -> list[Shard]:
    """``urls`` expanded (``expand_urls``), or as they are when they are ``Shard``s: those a
    command has just stat'ed go on to the next step marked ``listed``, and are not listed again."""
    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    shards = sum(isinstance(u, Shard) for u in items)
    if shards and shards < len(items):
        raise ValueError("give either shard URLs or Shards, not both in one list")
    return items if shards else expand_urls(items, storage_options)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection while many shards are made (a local folder's, or a listing's as
    its pages come): each collection walks every object made so far (and torch's), and took a
    quarter of the time of listing 100k local shards, none of which is garbage (a glob of 100k
    S3 keys behind 40 ms: 0.95-1.02 s, 0.76-0.81 s with its pages' shards made under the
    pause). What was made meanwhile then goes to the oldest generation at once (``gc.freeze``
    and ``unfreeze``, no walk): left in the youngest, the first collections after the pause
    walked it all (0.05-0.07 s before a gated dataset's first sample over 100k shards, 0.005
    s since). Cycles made meanwhile
    wait for the next full collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def split_url_list(urls: str) -> list[str]:
    """webdataset's ``::``-separated URL list as its parts (``"a.tar::b.tar"``)."""
    parts = urls.split("::")
    if len(parts) == 1 or parts[0] in fsspec.available_protocols():
        return [urls]
    if not all(parts):
        raise ValueError(f"empty URL in the '::'-separated list {redact(urls)!r}")
    return parts


_REMOTE_OBJECT = re.compile(r"(?!file://)[a-zA-Z][a-zA-Z0-9+.-]*://[^*?\[]*[^/*?\[]\Z")
"""A remote URL that is neither a glob nor a folder: a shard as it is (checked first: 100k
brace-expanded names took a quarter of a second through the general checks)."""


def _expand_one(pattern: str, storage_options: dict | None) -> list[Shard]:
    found: list[Shard] = []
    for url in braceexpand(pattern):
        if _REMOTE_OBJECT.match(url) and not url.lower().endswith(MANIFEST_SUFFIXES):
            found.append(Shard(url))
        elif is_pipe(url):
            found.append(Shard(url))  # a shell command: neither a glob nor a manifest
        elif url.lower().endswith(MANIFEST_SUFFIXES):
            found.extend(read_manifest(url, storage_options))
        elif any(ch in url for ch in "*?["):
            found.extend(_glob(url, storage_options))
        elif _is_folder(url):
            found.extend(_folder_shards(url, storage_options))
        else:
            found.append(Shard(url))
    if not found:
        raise NoShardsError(f"{redact(pattern)} matches no shard; check the pattern and the store")
    return found


def _is_folder(url: str) -> bool:
    """A local folder, or any URL ending in ``/`` (no request made for remote URLs)."""
    if url.endswith("/"):
        return True
    return protocol_of(url) == "file" and "://" not in url and os.path.isdir(url)


def _folder_shards(url: str, storage_options: dict | None) -> list[Shard]:
    """A folder given instead of a pattern: its ``.tar`` files, or an error saying what to give."""
    pattern = url.rstrip("/") + "/*.tar"
    found = _glob(pattern, storage_options)
    if not found:
        raise NoShardsError(
            f"{redact(url)} is a folder with no .tar file in it: did you mean {redact(pattern)}?"
        )
    return found


def _glob(url: str, storage_options: dict | None) -> list[Shard]:
    listed = _listed_glob(url, storage_options)
    if listed is not None:
        return listed
    urls = _glob_urls(url, storage_options)
    with gc_paused():
        return [Shard(u) for u in urls]


def _glob_urls(url: str, storage_options: dict | None) -> list[str]:
    local = _local_glob(url)
    if local is not None:
        return local
    fs = filesystem(url, storage_options)
    protocol = protocol_of(url)
    with _listing(url):
        matches = sorted(fs.glob(fs._strip_protocol(url)))
    if protocol == "file" and "://" not in url:
        return matches
    return [fs.unstrip_protocol(m) for m in matches]


def _one_folder(pattern: str) -> tuple[str, str] | None:
    """``(folder, name)`` of a pattern with wildcards in its last part only, which one listing
    of one folder answers; None for other patterns."""
    folder, name = os.path.split(pattern)
    if not name or "**" in name or any(ch in folder for ch in "*?["):
        return None
    return folder, name


@contextmanager
def _listing(url: str) -> Iterator[None]:
    """Listing ``url``: an error saying the store cannot be reached is StorageUnreachable."""
    try:
        yield
    except Exception as e:
        hint = storage_hint(e)
        if not hint:
            raise
        raise StorageUnreachable(f"cannot list {redact(url)}: {e}{hint}") from e


def _listed_glob(url: str, storage_options: dict | None) -> list[Shard] | None:
    """An S3 pattern with wildcards in its last part only (``s3://b/train/part-*.tar``): the
    matching objects of one listing of the folder (the one ``stat_shards`` would make), each
    with the version and size it gives and marked ``listed``, so that the shards are listed
    once, not once for their names and again for their versions. None for other patterns."""
    split = _one_folder(url) if protocol_of(url) in ("s3", "s3a") else None
    if split is None or "://" not in split[0]:
        return None
    folder, name = split
    fs = filesystem(url, storage_options)
    path = fs._strip_protocol(folder)
    listed = time.time()  # before the listing: what it shows may be that old
    base = fs.unstrip_protocol(path)
    shaped = _PageShards(f"{base}/", re.compile(fnmatch.translate(name)).match, listed)
    try:
        with _listing(url), gc_paused():  # one Shard a key (100k: ~0.7 s went on three a key)
            shards = folder_objects(
                fs, path, re.split(r"[*?\[]", name, maxsplit=1)[0], False, shaped
            )
    except FileNotFoundError:
        return []  # no such bucket: matches nothing, as fsspec's glob says
    return _each_once_in_order(shards)


def _each_once_in_order(shards: list[Shard]) -> list[Shard]:
    """A listing's shards as ListObjectsV2 gives them (each URL once, in order), else sorted
    with each URL's first entry kept: of versions, the latest (the listing gives no other)."""
    urls = [shard.url for shard in shards]
    if all(map(operator.lt, urls, urls[1:])):
        return shards
    first = {shard.url: shard for shard in reversed(shards)}  # each URL's first entry
    return [first[url] for url in sorted(first)]


class _PageShards:
    """The shards of a page of a folder's listing whose names ``matches``, made on the
    listing's thread as the page comes (``listing.objects``' ``shape``): 100k made after the
    last page took 0.12 s more before a glob's first sample, and the ``info()`` dicts made for
    them 0.04 s."""

    def __init__(self, base: str, matches: Callable, listed: float) -> None:
        self.base, self.matches, self.listed = base, matches, listed

    def __call__(self, objects: list[dict]) -> list[Shard]:
        base, matches, listed, shards = self.base, self.matches, self.listed, []
        for item in objects:
            name = item["Key"].rpartition("/")[2]
            if not matches(name):
                continue
            etag = item.get("ETag")
            if etag and "VersionId" not in item:  # shard_version's "e:" + ETag, without a call
                version = "e:" + etag.strip('"')
            else:
                version = shard_version({**item, "size": item.get("Size")})
            shards.append(Shard(base + name, version, item.get("Size"), False, listed))
        return shards  # each Shard positional: a dataclass's keywords cost ~0.5 us a Shard


def _local_glob(pattern: str) -> list[str] | None:
    """A local path with wildcards in its last part only (``data/*.tar``): the entries of one
    ``os.scandir`` that match it, as fsspec's glob gives them (absolute, sorted, hidden names
    and folders included), without its ``info()`` per entry. None for other patterns."""
    split = _one_folder(pattern) if protocol_of(pattern) == "file" else None
    if split is None or "://" in pattern:
        return None
    folder, name = split
    root = LocalFileSystem._strip_protocol(folder or ".")
    try:
        matches = re.compile(fnmatch.translate(name)).match
        with os.scandir(root) as entries:
            names = [e.name for e in entries if matches(e.name)]
    except OSError:
        return None  # fsspec's glob says what is wrong
    with gc_paused():
        return sorted(f"{root.rstrip('/')}/{n}" for n in names)


def read_manifest(url: str, storage_options: dict | None = None) -> list[Shard]:
    """Read a manifest: one URL a line, a JSON list of URLs, or a snapshot JSON with versions.

    Relative URLs are resolved against the manifest's folder.
    """
    try:
        text = read_small(url, storage_options).decode("utf-8")
    except FileNotFoundError as e:
        raise NoShardsError(f"manifest {redact(url)} does not exist") from e
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    if url.lower().endswith(".json"):
        return [_resolve_shard(s, base) for s in _manifest_entries(url, text)]
    lines = [line.strip() for line in text.splitlines()]
    return [
        _resolve_shard(Shard(line), base) for line in lines if line and not line.startswith("#")
    ]


def _manifest_entries(url: str, text: str) -> list[Shard]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NoShardsError(f"manifest {redact(url)} is not valid JSON: {e}") from e
    entries = data.get("shards") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise NoShardsError(f"manifest {redact(url)} has no list of shards")
    return [_manifest_entry(url, entry) for entry in entries]


def _manifest_entry(url: str, entry: Any) -> Shard:
    if isinstance(entry, str):
        return Shard(entry)
    if isinstance(entry, dict) and isinstance(entry.get("url"), str):
        version = entry.get("version")
        return Shard(entry["url"], version, entry.get("size"), pinned=version is not None)
    raise NoShardsError(
        f"manifest {redact(url)}: entry {entry!r} is neither a URL nor {{'url': ...}}"
    )


def _resolve_shard(shard: Shard, base: str) -> Shard:
    url = shard.url
    if "://" in url or os.path.isabs(url):
        return shard
    return Shard(f"{base}/{url}", shard.version, shard.size, shard.pinned)


# ------------------------------------------------------------------------------- versions


def shard_version(info: dict) -> str | None:
    """A version string from an fsspec ``info()`` dict: VersionId, else ETag, else size+mtime.
    A listed S3 object (an ETag, no VersionId) is written directly: a glob makes 100k."""
    if not (info.get("VersionId") or info.get("version_id")):
        etag = info.get("ETag") or info.get("etag")
        if etag:
            return "e:" + str(etag).strip('"')
    version = ShardVersion.from_info(info)
    return str(version) if version is not None else None


def stat_shard(shard: Shard, storage_options: dict | None = None) -> Shard:
    """Fill in the shard's current version and size from storage.

    A pinned shard keeps its version; a missing shard raises ``ShardReadError``. A ``pipe:``
    shard has neither version nor size: it is returned as is.
    """
    if is_pipe(shard.url):
        return shard
    fs = filesystem(shard.url, storage_options)
    path = fs._strip_protocol(shard.url)
    if shard.pinned:
        return _stat_pinned(fs, path, shard)
    info = _info(fs, path, shard.url)
    return Shard(shard.url, shard_version(info), info.get("size"), False)


def _info(fs: Any, path: str, url: str, **kwargs: Any) -> dict:
    try:
        fs.invalidate_cache(path)  # a listing cached by an earlier glob may predate an overwrite
        return fs.info(path, **kwargs)
    except FileNotFoundError as e:
        cause = e.__cause__  # fsspec's HTTP filesystem says "not found" for any failure
        if cause is not None and not isinstance(cause, FileNotFoundError):
            message = f"cannot stat shard: {cause!r}{storage_hint(cause)}"
            raise ShardReadError(redact(url), message) from e
        raise ShardReadError(redact(url), "shard does not exist") from e
    except Exception as e:  # botocore's and aiohttp's errors are not all OSErrors
        if isinstance(e, ShardReadError):
            raise
        raise ShardReadError(redact(url), f"cannot stat shard: {e!r}{storage_hint(e)}") from e


def _stat_pinned(fs: Any, path: str, shard: Shard) -> Shard:
    """Check that storage still holds the pinned version; ``VersionMismatch`` naming it if not.

    ``v:`` versions are looked up by VersionId (a deleted version fails); ``e:`` versions are
    compared with the current ETag (an overwritten shard fails instead of reading new bytes).
    """
    version = shard.parsed_version
    if version is not None and version.version_id and version_aware(fs):
        try:
            info = _info(fs, path, shard.url, version_id=version.version_id)
        except ShardReadError as e:
            raise VersionMismatch(
                f"{redact(shard.url)}: pinned version {version} no longer exists ({e}); "
                "the snapshot cannot be reproduced, take a new snapshot"
            ) from e
    else:
        info = _info(fs, path, shard.url)
        current = shard_version({"ETag": info.get("ETag") or info.get("etag")})
        if version is not None and version.etag and current and current != str(version):
            raise VersionMismatch(
                f"{redact(shard.url)}: pinned version {version} but storage now holds {current}; "
                "the shard was overwritten since the snapshot; take a new snapshot"
            )
    return Shard(shard.url, shard.version, shard.size or info.get("size"), True)


def stat_shards(
    shards: Iterable[Shard],
    storage_options: dict | None = None,
    threads: int = 16,
    failed: list[tuple[str, str]] | None = None,
    listing: bool = True,
) -> list[Shard]:
    """Stat many shards: S3 shards from one listing per folder (``listed_shards``; with
    ``listing=False``, a few shards of a large folder, not), local files with one ``os.stat``
    each in this thread, the others (and those a listing does not show) with a HEAD each,
    concurrently (a task per thread, not per shard).

    With a ``failed`` list, a shard that cannot be stat'ed (missing, a changed pinned version)
    is left out and appended to it as ``(url, message)`` instead of raising."""

    def stat(shard: Shard) -> Shard | tuple[str, str]:
        if shard.url in listed:
            return listed[shard.url]
        if failed is None:
            return stat_shard(shard, storage_options)
        try:
            return stat_shard(shard, storage_options)
        except (DriftloaderError, OSError) as e:
            return (redact(shard.url), str(e))

    shards = list(shards)
    recent = time.time() - LISTING_TRUSTED_S
    with gc_paused():  # a Shard made anew: dataclasses.replace took ~4 us a shard
        listed = {  # a pinned one, its pin just checked (a command's stat, then its next step)
            s.url: Shard(s.url, s.version, s.size, s.pinned) for s in shards if s.listed > recent
        }
    if listing:
        listed.update(listed_shards([s for s in shards if s.url not in listed], storage_options))
    if len(listed) == len(shards):
        return [listed[s.url] for s in shards]
    with gc_paused():
        local = [_local_stat(s) if s.url not in listed else None for s in shards]
    rest = [s for s, found in zip(shards, local) if found is None]
    if len(rest) <= 1:
        stated = iter([stat(s) for s in rest])
    else:  # a task per thread, not per shard
        size = -(-len(rest) // threads)
        parts = [rest[i : i + size] for i in range(0, len(rest), size)]
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            stated = iter(
                [s for part in pool.map(lambda p: [stat(s) for s in p], parts) for s in part]
            )
    found = [s if s is not None else next(stated) for s in local]  # local ones: in this thread
    if failed is not None:
        failed.extend(f for f in found if isinstance(f, tuple))
    return [s for s in found if isinstance(s, Shard)]


def is_local_file(shard: Shard) -> bool:
    """Whether the shard is an unpinned local path (plain or ``file://``), which one
    ``os.stat`` versions."""
    url = shard.url
    return not (shard.pinned or "://" in local_path(url) or is_pipe(url))


def stat_local(shard: Shard) -> Shard:
    """An unversioned local file with its version (``stat_shards``' answer for it, in one
    ``os.stat``; ``ShardReadError`` if it is missing); any other shard as it is."""
    if shard.version is not None or not is_local_file(shard):
        return shard
    return _local_stat(shard) or stat_shard(shard)


def _local_stat(shard: Shard) -> Shard | None:
    """An unpinned local shard stat'ed with one ``os.stat``: the size and mtime fsspec's
    ``info`` gives, so the same version, without its overhead. None for other shards and for
    a path that is not a readable regular file (``stat_shard`` then says what is wrong)."""
    if not is_local_file(shard):
        return None
    url = shard.url
    try:
        found = os.stat(local_path(url))
    except OSError:
        return None
    if not S_ISREG(found.st_mode):
        return None
    return Shard(url, file_version(found.st_size, found.st_mtime or None), found.st_size)


def listed_shards(shards: Sequence[Shard], storage_options: dict | None = None) -> dict[str, Shard]:
    """Versions and sizes of S3 shards from one listing per folder instead of a HEAD each:
    ``{url: Shard}`` for the shards the listing answers for.

    The listing is fresh (never a cached one) and, on a version-aware filesystem, lists object
    versions, so each entry gives what a HEAD gives: the latest VersionId, the ETag and the
    size (the same version string). A pinned shard is answered for when the listing shows its
    pinned VersionId (or, for an ETag pin, its current ETag is the pinned one). Folders with
    one shard, shards the listing does not answer for (missing, a pin that no longer holds)
    and listings refused (no list permission) or failing are left to ``stat_shard``."""
    folders: dict[str, list[Shard]] = {}
    for shard in shards:
        if "://" not in shard.url or protocol_of(shard.url) not in ("s3", "s3a"):
            continue  # a local path (checked first: 100k of them are listed in no time)
        folder, _, name = shard.url.rpartition("/")
        if folder and name:
            folders.setdefault(folder, []).append(shard)
    found: dict[str, Shard] = {}
    for folder, members in folders.items():
        if len({s.url for s in members}) > 1:
            found.update(_listed_folder(folder, members, storage_options))
    return found


def _listed_folder(folder: str, members: list[Shard], storage_options: dict | None) -> dict:
    fs = filesystem(folder, storage_options)
    names = [s.url.rpartition("/")[2] for s in members]
    every_version = version_aware(fs) and any(s.pinned for s in members)
    path, prefix = fs._strip_protocol(folder), os.path.commonprefix(names)
    try:
        by_name = folder_listing(fs, path, prefix, every_version)
    except Exception:  # noqa: BLE001 - no list permission, an old s3fs: a HEAD each instead
        return {}
    found = {}
    for shard, name in zip(members, names):
        listed = _answer(shard, by_name.get(name, []), every_version)
        if listed is not None:
            found[shard.url] = listed
    return found


def _answer(shard: Shard, infos: list[dict], every_version: bool) -> Shard | None:
    """The shard as the listing's entries for its key describe it, or None to stat it."""
    latest = [i for i in infos if i.get("IsLatest", True) or not every_version]
    if not shard.pinned:
        return Shard(shard.url, shard_version(latest[0]), latest[0].get("size")) if latest else None
    pin = shard.parsed_version
    if pin is not None and pin.version_id and every_version:
        match = [i for i in infos if i.get("VersionId") == pin.version_id]
    elif pin is not None and pin.etag:
        match = [i for i in latest if str(i.get("ETag", "")).strip('"') == pin.etag]
    else:
        return None
    if not match:
        return None
    return Shard(shard.url, shard.version, shard.size or match[0].get("size"), True)
