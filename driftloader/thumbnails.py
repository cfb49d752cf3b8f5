"""A few tiny thumbnails per image field kept in a profile, for the report's contact sheet.

A shard profile keeps the first ``PER_FIELD`` decodable images of each image field (by extension,
see ``features.fields.default_kind``) as JPEGs whose longer side is ``SIZE`` pixels, base64 in the
profile's JSON (about 1 KB each). Merging keeps, per field, the ``PER_FIELD`` thumbnails with the
smallest SHA-1 of their text: associative and commutative like every other part of a profile.
Bad images are skipped (the features count them); nothing is decoded beyond PIL's draft mode.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .features.fields import default_kind

PER_FIELD = 4
SIZE = 32
MAX_CHARS = 8192  # a stored thumbnail's base64 text at most (a 32 px JPEG is ~1 KB)


def thumbnail(data: bytes, size: int = SIZE) -> str | None:
    """Base64 JPEG of ``data`` (an encoded image) at most ``size`` pixels on its longer side;
    None when it does not decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size, size))
            small = img.convert("RGB")
            small.thumbnail((size, size))
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=70)
    except Exception:  # noqa: BLE001 - any undecodable image is skipped (features count it)
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def add_thumbnails(thumbnails: dict[str, list[str]], samples: Sequence[Mapping]) -> None:
    """Fill ``thumbnails`` (field -> base64 JPEGs) up to ``PER_FIELD`` per image field from
    ``samples`` (sample dicts of raw bytes), in sample order."""
    for sample in samples:
        for field, value in sample.items():
            if field.startswith("__") or not isinstance(value, (bytes, bytearray)):
                continue
            kept = thumbnails.get(field)
            if (kept is not None and len(kept) >= PER_FIELD) or default_kind(field) != "image":
                continue
            small = thumbnail(bytes(value))
            if small is not None:
                thumbnails.setdefault(field, []).append(small)


def merge_thumbnails(parts: Iterable[Mapping[str, list[str]]]) -> dict[str, list[str]]:
    """Per field, the ``PER_FIELD`` thumbnails of ``parts`` with the smallest SHA-1."""
    pooled: dict[str, set[str]] = {}
    for part in parts:
        for field, items in part.items():
            pooled.setdefault(field, set()).update(items)
    key = lambda s: hashlib.sha1(s.encode()).hexdigest()  # noqa: E731
    return {f: sorted(items, key=key)[:PER_FIELD] for f, items in sorted(pooled.items())}


def checked_thumbnails(raw: Any) -> dict[str, list[str]]:
    """Stored thumbnails after checking their shape (ValueError otherwise; never decoded)."""
    if not isinstance(raw, dict):
        raise ValueError(f"'thumbnails' must be an object, got {type(raw).__name__}")
    for field, items in raw.items():
        if not isinstance(items, list) or len(items) > PER_FIELD:
            raise ValueError(f"thumbnails of {field!r} must be a list of <= {PER_FIELD}")
        for item in items:
            if not isinstance(item, str) or len(item) > MAX_CHARS:
                raise ValueError(f"a thumbnail of {field!r} is not a short base64 string")
            try:
                base64.b64decode(item, validate=True)
            except binascii.Error as e:
                raise ValueError(f"a thumbnail of {field!r} is not base64: {e}") from e
    return {str(f): list(items) for f, items in raw.items()}
