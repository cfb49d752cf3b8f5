"""A glob's shards made page by page as its listing comes (``sources._listed_glob``): each
page's in the thread that listed it, while the other ranges wait for theirs, so that 100k
shards (~0.15 s of ``Shard`` objects) cost no time after the listing's last page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .sources import Shard


@dataclass
class ListedPage:
    """A page of a glob's listing: its objects' dicts, the first and last names among them,
    and their shards when the page gives them in one pass (else None)."""

    infos: list[dict]
    first: str | None
    last: str | None
    shards: list[Shard] | None


def page_shards(infos: list[dict], base: str, matches: Callable, listed: float) -> list[ListedPage]:
    """The page's shards whose names ``matches``, made in one pass in the thread that listed
    the page (hidden in the other ranges' round trips), when its objects come as
    ListObjectsV2 gives them: each name once, in order, with an ETag and no VersionId (else
    None: ``_listed_glob`` sorts the whole listing and keeps each name's first version)."""
    shards: list[Shard] | None = []
    add, last = shards.append, ""
    for info in infos:
        name = info["Key"].rpartition("/")[2]
        etag = info.get("ETag")
        if name <= last or not etag or "VersionId" in info or "version_id" in info:
            shards = None
            break
        last = name
        if matches(name):  # shard_version's "e:" + ETag, without a call a key
            add(Shard(base + name, "e:" + etag.strip('"'), info.get("size"), False, listed))
    names = [i["Key"].rpartition("/")[2] for i in (infos[0], infos[-1])] if infos else [None] * 2
    return [ListedPage(infos, names[0], names[1], shards)]


def shards_in_order(pages: list[ListedPage]) -> list[Shard] | None:
    """The shards of a glob's pages (``page_shards``), when every page made them and the
    pages follow each other in name order; else None. A glob of 100k keys spent 0.23-0.34 s
    after its listing keying, sorting and versioning each name apart."""
    shards: list[Shard] = []
    last = ""
    for page in pages:
        if page.shards is None or (page.first is not None and page.first <= last):
            return None
        shards += page.shards
        last = page.last or last
    return shards
