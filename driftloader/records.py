"""Samples from records: decoded values made shard-shaped, and JSON-lines / Parquet files read
as samples, so that logged requests are profiled and checked with the reference's featurizer.

A shard holds every field as bytes; featurizers read them by the field's extension
(``x.npy`` an array, ``cls`` a label, ``meta.json`` JSON, ``jpg`` an image; see
``driftloader.features``). ``as_shard_sample`` turns decoded values into what a shard would
hold, so a featurizer sees serving traffic exactly as it saw training data:

* ``.npy`` fields: arrays stay arrays (the built-in featurizers read them as they are), or are
  written as ``.npy`` bytes with ``npy_bytes=True``; lists and numbers become arrays;
* label and text fields, and fields of no known extension: numbers become their text;
* ``.json`` fields: any JSON value (dict, list, number) becomes JSON text;
* image fields: a PIL image or a ``uint8`` array is encoded in the field's format (JPEG at
  quality 95, PNG, ...), a ``str`` is read as base64; byte-size and JPEG-quality features then
  describe that encoding, so pass the request's original bytes when you have them;
* bytes and ``str`` are kept. A value that cannot be converted is passed on unchanged, and the
  featurizer counts it as an error (as it counts corrupt bytes in a shard).

Files: JSON-lines (``.jsonl``, ``.ndjson``, also ``.gz``): one JSON object per line, one sample
(binary image fields as base64 strings). Parquet (``.parquet``, needs pyarrow:
``pip install 'driftloader[serving]'``): one row per sample, binary columns as bytes. A line
or file that cannot be read raises ``ShardReadError`` naming the file and the line.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .errors import ShardReadError
from .features import default_kind, extension
from .shardversion import version_id_of
from .sources import Shard, filesystem, redact, strip_protocol

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
RECORD_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES
PARQUET_BATCH_ROWS = 1024
JPEG_QUALITY = 95

_PASS = (bytes, bytearray, memoryview, str)
_IMAGE_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "ppm": "PPM"}


# -- decoded values -> shard values ------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``json.dumps`` fallback for numpy values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _text(value: Any) -> Any:
    """Numbers (and size-1 arrays) as their text; other values unchanged."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        return _json_text(value)
    return value


def _json_text(value: Any) -> Any:
    try:
        return json.dumps(value, default=_plain, allow_nan=True)
    except (TypeError, ValueError):
        return value


def _array(value: Any, npy_bytes: bool) -> Any:
    if not isinstance(value, np.ndarray):
        if hasattr(value, "__array__") or isinstance(value, (list, tuple, int, float, np.generic)):
            try:
                value = np.asarray(value)
            except (TypeError, ValueError):
                return value
        else:
            return value
    if not npy_bytes:
        return value
    if value.dtype.hasobject:
        return value  # refused by the featurizer (counted), never pickled
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    return buf.getvalue()


def _image(value: Any, ext: str) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value
    module = type(value).__module__
    if not (module.startswith("PIL.") or isinstance(value, np.ndarray)):
        return value
    try:
        from PIL import Image

        img = Image.fromarray(value) if isinstance(value, np.ndarray) else value
        fmt = _IMAGE_FORMATS.get(ext, ext.upper())
        if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
            img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))
        return buf.getvalue()
    except Exception:  # PIL on a user's value: the featurizer counts it as an error
        return value


_kind_of = functools.lru_cache(maxsize=4096)(default_kind)


def as_shard_value(field: str, value: Any, npy_bytes: bool = False) -> Any:
    """``value`` of ``field`` as a shard would hold it (see the module docstring)."""
    if value is None or (isinstance(value, _PASS) and not isinstance(value, str)):
        return value
    kind = _kind_of(field)
    if kind == "array":
        return _array(value, npy_bytes)
    if kind == "image":
        return _image(value, extension(field))
    if isinstance(value, str):
        return value
    if kind == "json":
        return _json_text(value)
    return _text(value)


def as_shard_sample(sample: Mapping[str, Any], npy_bytes: bool = False) -> dict[str, Any]:
    """A copy of ``sample`` with every field's value as a shard would hold it."""
    return {
        k: v if k.startswith("__") else as_shard_value(k, v, npy_bytes) for k, v in sample.items()
    }


# -- record files ------------------------------------------------------------------------------


def record_format(url: str) -> str | None:
    """``"jsonl"`` or ``"parquet"`` for a record file's URL, None for anything else (a shard)."""
    name = url.lower().split("?", 1)[0]
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _open(shard: Shard, storage_options: dict | None):
    """The file of ``shard`` opened for reading (its S3 version when pinned)."""
    kwargs: dict[str, Any] = {}
    version_id = version_id_of(shard.version) if shard.pinned else None
    if version_id:
        kwargs["version_id"] = version_id
    if shard.url.lower().endswith(".gz"):
        kwargs["compression"] = "gzip"
    fs = filesystem(shard.url, storage_options)
    try:
        return fs.open(strip_protocol(shard.url, storage_options), "rb", **kwargs)
    except FileNotFoundError as e:
        raise ShardReadError(redact(shard.url), "file does not exist") from e
    except PermissionError as e:
        raise ShardReadError(redact(shard.url), f"permission denied: {e}") from e


def _stem(url: str) -> str:
    name = url.replace("\\", "/").rsplit("/", 1)[-1]
    return name.split(".", 1)[0] or name


def _sample(row: Any, url: str, index: int, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ShardReadError(url, f"{where}: expected a JSON object, got {type(row).__name__}")
    key = row.get("__key__")
    sample = {k: v for k, v in row.items() if not k.startswith("__")}
    sample = as_shard_sample(sample, npy_bytes=True)
    sample["__key__"] = key if isinstance(key, str) else f"{_stem(url)}-{index:06d}"
    sample["__url__"] = url
    return sample


def _jsonl_samples(shard: Shard, storage_options: dict | None) -> Iterator[dict[str, Any]]:
    url = redact(shard.url)
    index = offset = 0
    with _open(shard, storage_options) as f:
        for number, line in enumerate(f, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ShardReadError(url, f"line {number} is not JSON: {e}", start) from e
            yield _sample(row, url, index, f"line {number}")
            index += 1


def _parquet_module():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(
            "reading Parquet files needs pyarrow: pip install 'driftloader[serving]'"
        ) from e
    return pq


def _parquet_samples(shard: Shard, storage_options: dict | None) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    pq, url, index = _parquet_module(), redact(shard.url), 0
    with _open(shard, storage_options) as f:
        try:
            batches = pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH_ROWS)
            for batch in batches:
                for row in batch.to_pylist():
                    yield _sample(row, url, index, f"row {index}")
                    index += 1
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, ShardReadError):
                raise
            raise ShardReadError(url, f"not a readable Parquet file (row {index}): {e}") from e


def read_records(
    shard: Shard | str, storage_options: dict | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the samples of a JSON-lines or Parquet file, one per line or row.

    Each sample has ``__key__`` (the record's own ``__key__``, else ``<file stem>-<index>``),
    ``__url__`` and its fields as a shard would hold them (``as_shard_sample``).

    Example::

        for sample in read_records("s3://logs/requests-2026-12-01.jsonl"):
            ...
    """
    shard = Shard(os.fspath(shard)) if isinstance(shard, (str, os.PathLike)) else shard
    fmt = record_format(shard.url)
    if fmt is None:
        raise ValueError(
            f"{redact(shard.url)} is not a record file; expected one of {RECORD_SUFFIXES}"
        )
    if fmt == "jsonl":
        yield from _jsonl_samples(shard, storage_options)
    else:
        yield from _parquet_samples(shard, storage_options)


# Profiling reads one shard at a time in each of its processes and featurizes it at tens of
# MB/s: the 128 MiB in flight it always had, not a training process's 256 MiB.
SHARD_AT_A_TIME_INFLIGHT = 128 * 1024 * 1024


def read_samples(shard: Shard, storage_options: dict | None = None) -> Iterator[dict[str, Any]]:
    """The samples of a tar shard (``reader.read_shard``) or of a record file, by extension."""
    if record_format(shard.url) is not None:
        return read_records(shard, storage_options)
    from .reader import read_shard

    return read_shard(shard, storage_options, max_inflight=SHARD_AT_A_TIME_INFLIGHT)
