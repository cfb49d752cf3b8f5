"""Featurizers: sample dicts -> batches of feature columns (numpy), with a stable fingerprint.

A featurizer takes a list of webdataset-style samples (``{"__key__", "__url__", ext: bytes}``)
and returns a ``FeatureBatch``: ``{name: Column}``, sorted by name, one entry per sample.

Default feature names (``DefaultFeaturizer``; the field type is the last dotted part of the
field name, so ``"x.npy"`` is an array and ``"cls"`` a label):

* arrays (``.npy``): ``<field>[i]`` per element (C order) when the array has ``<= max_vector``
  values, else ``<field>.mean``, ``.std``, ``.min``, ``.max``, ``.size``;
* labels (``.cls``, ``.cls2``, ``.class``, ``.index``, ``.label``, ``.target``): categorical
  ``<field>`` (stripped text; integers normalised, ``"07"`` -> ``"7"``);
* JSON (``.json``): ``<field>.<key>`` and ``<field>.<key>.<sub>`` for one nested object level:
  numbers -> numeric, strings and bools (``"true"``/``"false"``) -> categorical, lists -> numeric
  ``<...>.len``; null and deeper objects are skipped;
* text (``.txt``, ``.text``, ``.caption``, ``.title``): numeric ``<field>.len`` (characters),
  ``.words``, ``.alpha_ratio``, ``.digit_ratio``, ``.upper_ratio``, ``.space_ratio`` (0 for an
  empty text) and tokens ``<field>.tokens`` (the text);
* images (``.jpg .jpeg .png .webp .ppm .bmp``): numeric ``<field>.bytes``; with
  ``decode_images=True`` also ``.width``, ``.height``, ``.mean_r``, ``.mean_g``, ``.mean_b``.

Missing fields are masked (numeric) or ``None``; NaN and inf stay as values. Bytes that fail to
parse make that sample's entries of the field missing and add one to ``featurizer.errors``;
nothing is ever unpickled. Column names depend only on the samples of the batch, never on the
process or on earlier batches, so workers and ranks agree.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import io
import json
import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from driftloader.errors import DriftloaderError

Kind = Literal["numeric", "categorical", "tokens"]

FEATURES_VERSION = "1"
"""Bump when any featurization changes its output: it is part of every fingerprint."""

ARRAY_EXTENSIONS = frozenset({"npy"})
LABEL_EXTENSIONS = frozenset({"cls", "cls2", "class", "index", "label", "target"})
JSON_EXTENSIONS = frozenset({"json"})
TEXT_EXTENSIONS = frozenset({"txt", "text", "caption", "title"})
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "ppm", "bmp"})

SPEC_KINDS = (
    "auto",
    "numeric",
    "categorical",
    "text",
    "vector",
    "summary",
    "array",
    "json",
    "image",
)
"""Kinds a ``FeatureSpec`` entry may name; see ``FeatureSpec``."""

# isinstance targets as tuples: a ``X | Y`` union is rebuilt on every call, which is slow here.
_BYTES = (bytes, bytearray)
_BOOLS = (bool, np.bool_)
_NUMBERS = (numbers.Real, np.number)
_JSON_SCALARS = (str, bool, int, float)
_CATEGORIES = (str, bool, np.bool_)

SUMMARY_STATS = ("mean", "std", "min", "max", "size")
TEXT_STATS = ("len", "words", "alpha_ratio", "digit_ratio", "upper_ratio", "space_ratio")
IMAGE_STATS = ("bytes", "width", "height", "mean_r", "mean_g", "mean_b")


@dataclass(frozen=True)
class Column:
    """One feature over a batch of samples.

    numeric: float64 ``np.ma.MaskedArray`` (masked = missing; NaN and inf kept as values);
    categorical: object array of ``str`` (``None`` = missing);
    tokens: object array of text ``str`` (``None`` = missing).
    """

    kind: Kind
    values: np.ndarray


FeatureBatch = dict[str, Column]


class FeaturizeError(DriftloaderError, ValueError):
    """User featurization code failed on a sample; names the sample key and its shard URL."""

    def __init__(self, key: str | None, url: str | None, message: str) -> None:
        super().__init__(f"sample {key!r} of shard {url!r}: {message}")
        self.key = key
        self.url = url


class FeatureWarning(UserWarning):
    """A field was skipped by the default featurizer (warned once per field and featurizer)."""


# -- helpers: fingerprints --------------------------------------------------------------------


def _digest(obj: Any) -> str:
    """sha256 hex of canonical JSON: stable across processes (never Python's salted hash)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def callable_identity(fn: Callable[..., Any]) -> dict[str, str]:
    """Qualified name and a hash of the source text (or bytecode) of ``fn``, for fingerprints."""
    if isinstance(fn, functools.partial):
        inner = callable_identity(fn.func)
        extra = repr((fn.args, sorted(fn.keywords.items())))
        return {"name": f"partial({inner['name']})", "source": _digest([inner["source"], extra])}
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        source = code.co_code.hex() if code is not None else ""
    return {"name": name, "source": hashlib.sha256(source.encode("utf-8")).hexdigest()}


# -- helpers: decoding raw field bytes --------------------------------------------------------


def extension(field: str) -> str:
    """The type part of a field name: the last dotted part, lower case (``"x.npy"`` -> ``npy``)."""
    return field.rsplit(".", 1)[-1].lower()


def _as_bytes(raw: Any) -> bytes | memoryview:
    if isinstance(raw, _BYTES):
        return raw
    if isinstance(raw, memoryview):
        return raw.cast("B")
    if isinstance(raw, str):
        return raw.encode("utf-8")
    raise TypeError(f"expected bytes, got {type(raw).__name__}")


_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER = 10_000  # numpy's own default limit for untrusted headers
_npy_headers: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int]] = {}


def _check_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject:
        raise ValueError("object arrays are refused (they would need pickle)")
    if dtype.kind not in "biuf":
        raise ValueError(f"unsupported array dtype {dtype}")
    return dtype


def _parse_npy_header(header: bytes, major: int) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Parse an .npy header dict literal safely (``ast.literal_eval``; no pickle, no eval)."""
    try:
        meta = ast.literal_eval(header.decode("utf-8" if major >= 3 else "latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(f"bad .npy header: {e}") from e
    if not isinstance(meta, dict) or set(meta) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"bad .npy header: {meta!r}")
    shape, fortran = meta["shape"], meta["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"bad .npy shape {shape!r}")
    if not isinstance(fortran, bool):
        raise ValueError(f"bad .npy fortran_order {fortran!r}")
    dtype = _check_dtype(np.lib.format.descr_to_dtype(meta["descr"]))
    return dtype, shape, fortran, math.prod(shape)


def load_npy(raw: Any) -> np.ndarray:
    """Decode .npy bytes to a numeric array without pickle; ``ValueError`` if corrupt or refused."""
    if isinstance(raw, np.ndarray):
        _check_dtype(raw.dtype)
        return raw
    buf = _as_bytes(raw)
    if len(buf) < 10 or buf[:6] != _NPY_MAGIC:
        raise ValueError("not an .npy file (bad magic)")
    major = buf[6]
    if major not in (1, 2, 3):
        raise ValueError(f"unsupported .npy version {major}")
    start = 10 if major == 1 else 12
    hlen = int.from_bytes(buf[8:start], "little")
    if hlen > _NPY_MAX_HEADER or len(buf) < start + hlen:
        raise ValueError("truncated or oversized .npy header")
    header = bytes(buf[start : start + hlen])
    parsed = _npy_headers.get(header)
    if parsed is None:
        parsed = _parse_npy_header(header, major)
        if len(_npy_headers) > 256:
            _npy_headers.clear()
        _npy_headers[header] = parsed
    dtype, shape, fortran, count = parsed
    offset = start + hlen
    if len(buf) - offset < count * dtype.itemsize:
        raise ValueError("truncated .npy data")
    if count == 0:
        return np.empty(shape, dtype)
    flat = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _decode_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else bytes(_as_bytes(raw)).decode("utf-8")


def _decode_label(raw: Any) -> str:
    text = _decode_text(raw).strip()
    try:
        return str(int(text))
    except ValueError:
        return text


def _decode_json(raw: Any) -> Any:
    return json.loads(raw if isinstance(raw, str) else bytes(_as_bytes(raw)))


def _decode_bytes(raw: Any) -> bytes | memoryview:
    return _as_bytes(raw)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "npy": load_npy,
    "text": _decode_text,
    "label": _decode_label,
    "json": _decode_json,
    "bytes": _decode_bytes,
}


# -- one batch being built --------------------------------------------------------------------


class _Batch:
    """The columns of one batch under construction, and the featurizer's error count."""

    def __init__(self, featurizer: Featurizer, samples: Sequence[Mapping[str, Any]]) -> None:
        self.featurizer = featurizer
        self.samples = samples
        self.n = len(samples)
        self.columns: dict[str, Column] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def error(self, k: int = 1) -> None:
        self.featurizer.errors += k

    def known_kind(self, name: str) -> str | None:
        return self.featurizer._schema.get(name, {}).get("kind")

    def fail(self, i: int, message: str) -> FeaturizeError:
        sample = self.samples[i]
        return FeaturizeError(sample.get("__key__"), sample.get("__url__"), message)

    def numeric(self, name: str, field: str, data: np.ndarray, mask: np.ndarray) -> None:
        values = np.ma.MaskedArray(np.asarray(data, dtype=np.float64), mask=mask)
        self._add(name, field, Column("numeric", values))

    def objects(self, kind: Kind, name: str, field: str, values: list[str | None]) -> None:
        arr = np.empty(self.n, dtype=object)
        arr[:] = values
        self._add(name, field, Column(kind, arr))

    def _add(self, name: str, field: str, column: Column) -> None:
        self.columns[name] = column
        self.info[name] = {"kind": column.kind, "field": field}

    def result(self) -> FeatureBatch:
        for name, info in self.info.items():
            self.featurizer._schema.setdefault(name, info)
        return {name: self.columns[name] for name in sorted(self.columns)}


def _decode_all(batch: _Batch, values: list[Any], decoder: Callable[[Any], Any]) -> list[Any]:
    """Decode every present value; a failure counts one error and leaves the entry missing."""
    out: list[Any] = [None] * len(values)
    for i, raw in enumerate(values):
        if raw is None:
            continue
        try:
            out[i] = decoder(raw)
        except Exception:  # our own decoders on untrusted bytes: count, never crash
            batch.error()
    return out


def _transform_all(
    batch: _Batch, key: str, values: list[Any], fn: Callable[[Any], Any]
) -> list[Any]:
    """Apply a user transform; its exceptions become ``FeaturizeError`` naming the sample."""
    out: list[Any] = [None] * len(values)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            out[i] = fn(value)
        except Exception as e:
            raise batch.fail(i, f"transform of {key!r} failed: {e!r}") from e
    return out


# -- feature steps: decoded values -> columns -------------------------------------------------


def _to_array(batch: _Batch, values: list[Any]) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = [None] * len(values)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            arr = np.asarray(value)
            _check_dtype(arr.dtype)
            out[i] = arr
        except (ValueError, TypeError):
            batch.error()
    return out


def _stack_rows(arrays: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, mask) of flattened arrays, padded (masked) to ``width``; one stack if uniform."""
    if all(a.size == width for a in arrays):
        rows = np.stack([a.reshape(-1) for a in arrays]).astype(np.float64, copy=False)
        return rows, np.zeros(rows.shape, dtype=bool)
    rows = np.zeros((len(arrays), width))
    mask = np.ones((len(arrays), width), dtype=bool)
    for r, a in enumerate(arrays):
        rows[r, : a.size] = a.reshape(-1)
        mask[r, : a.size] = False
    return rows, mask


def _element_features(
    batch: _Batch, name: str, field: str, arrays: list[np.ndarray | None], rows_at: list[int]
) -> None:
    """``name[i]`` per element of the arrays at ``rows_at`` (others masked)."""
    width = max(arrays[i].size for i in rows_at)  # type: ignore[union-attr]
    if width == 0:
        return
    rows, row_mask = _stack_rows([arrays[i] for i in rows_at], width)  # type: ignore[misc]
    data = np.zeros((width, batch.n))
    mask = np.ones((width, batch.n), dtype=bool)
    data[:, rows_at] = rows.T
    mask[:, rows_at] = row_mask.T
    for j in range(width):
        batch.numeric(f"{name}[{j}]", field, data[j], mask[j])


def _summary_features(
    batch: _Batch, name: str, field: str, arrays: list[np.ndarray | None], rows_at: list[int]
) -> None:
    """``name.mean/.std/.min/.max/.size`` of the arrays at ``rows_at`` (others masked)."""
    data = np.zeros((len(SUMMARY_STATS), batch.n))
    mask = np.ones((len(SUMMARY_STATS), batch.n), dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        for i in rows_at:
            a = arrays[i]
            data[4, i], mask[4, i] = a.size, False  # type: ignore[union-attr]
            if a.size:  # type: ignore[union-attr]
                data[:4, i] = (a.mean(dtype=np.float64), a.std(dtype=np.float64), a.min(), a.max())  # type: ignore[union-attr]
                mask[:4, i] = False
    for j, stat in enumerate(SUMMARY_STATS):
        batch.numeric(f"{name}.{stat}", field, data[j], mask[j])


def _array_features(
    batch: _Batch, name: str, field: str, values: list[Any], mode: str, max_vector: int
) -> None:
    """Element features for small arrays, summaries for large ones (``mode`` may force either)."""
    arrays = _to_array(batch, values)
    present = [i for i, a in enumerate(arrays) if a is not None]
    small = [
        i for i in present if mode == "vector" or (mode == "array" and arrays[i].size <= max_vector)
    ]  # type: ignore[union-attr]
    large = sorted(set(present) - set(small))
    if small:
        _element_features(batch, name, field, arrays, small)
    if large:
        _summary_features(batch, name, field, arrays, large)


def _number(value: Any) -> float | None:
    """A float for a JSON/Python/numpy number or a size-1 numeric array; None otherwise."""
    if isinstance(value, _BOOLS):
        return None
    if isinstance(value, _NUMBERS):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(-1)[0])
    return None


def _category(value: Any) -> str | None:
    """A category string for str, bool, int, float or a size-1 array; None otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, _BOOLS):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, np.ndarray) and value.size == 1:
        return _category(value.reshape(-1)[0].item())
    return None


def _numeric_features(batch: _Batch, name: str, field: str, values: list[Any]) -> None:
    data = np.zeros(batch.n)
    mask = np.ones(batch.n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            continue
        x = _number(value)
        if x is None and isinstance(value, str):
            try:
                x = float(value.strip())
            except ValueError:
                x = None
        if x is None:
            batch.error()
        else:
            data[i], mask[i] = x, False
    batch.numeric(name, field, data, mask)


def _categorical_features(batch: _Batch, name: str, field: str, values: list[Any]) -> None:
    out: list[str | None] = [None] * batch.n
    for i, value in enumerate(values):
        if value is None:
            continue
        out[i] = _category(value)
        if out[i] is None:
            batch.error()
    batch.objects("categorical", name, field, out)


_ALPHA, _DIGIT, _UPPER, _SPACE = 1, 2, 4, 8


def _char_flags(ch: str) -> int:
    return (
        _ALPHA * ch.isalpha()
        + _DIGIT * ch.isdigit()
        + _UPPER * ch.isupper()
        + _SPACE * ch.isspace()
    )


_ASCII_FLAGS = np.array([_char_flags(chr(c)) for c in range(128)], dtype=np.uint8)


def _text_stats(texts: list[str]) -> np.ndarray:
    """(6, len(texts)) array of TEXT_STATS, vectorised over all characters of the batch."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4")
    flags = np.zeros(codes.size, dtype=np.uint8)
    ascii_ = codes < 128
    flags[ascii_] = _ASCII_FLAGS[codes[ascii_]]
    if not ascii_.all():
        uniq, inverse = np.unique(codes[~ascii_], return_inverse=True)
        table = np.array([_char_flags(chr(c)) for c in uniq], dtype=np.uint8)
        flags[~ascii_] = table[inverse]
    segment = np.repeat(np.arange(len(texts)), lengths)
    denom = np.maximum(lengths, 1)
    out = np.empty((len(TEXT_STATS), len(texts)))
    out[0] = lengths
    out[1] = [len(t.split()) for t in texts]
    for row, bit in enumerate((_ALPHA, _DIGIT, _UPPER, _SPACE), start=2):
        hits = (flags & bit).astype(bool)
        out[row] = np.bincount(segment, weights=hits, minlength=len(texts)) / denom
    return out


def _text_features(batch: _Batch, name: str, field: str, values: list[Any]) -> None:
    texts: list[str | None] = [None] * batch.n
    for i, value in enumerate(values):
        if isinstance(value, str):
            texts[i] = value
        elif value is not None:
            batch.error()
    rows_at = [i for i, t in enumerate(texts) if t is not None]
    data = np.zeros((len(TEXT_STATS), batch.n))
    mask = np.ones((len(TEXT_STATS), batch.n), dtype=bool)
    if rows_at:
        data[:, rows_at] = _text_stats([texts[i] for i in rows_at])  # type: ignore[misc]
        mask[:, rows_at] = False
    for j, stat in enumerate(TEXT_STATS):
        batch.numeric(f"{name}.{stat}", field, data[j], mask[j])
    batch.objects("tokens", f"{name}.tokens", field, texts)


def _image_stats(raw: bytes | memoryview, decode: bool) -> tuple[float, ...]:
    if not decode:
        return (float(len(raw)),)
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(raw)) as img:
        width, height = img.size
        img.draft(
            "RGB", (max(1, width // 8), max(1, height // 8))
        )  # JPEG only: DCT downscale, means ~kept
        means = ImageStat.Stat(img.convert("RGB")).mean
    return (float(len(raw)), float(width), float(height), *map(float, means))


def _image_features(batch: _Batch, name: str, field: str, values: list[Any], decode: bool) -> None:
    stats = IMAGE_STATS if decode else IMAGE_STATS[:1]
    data = np.zeros((len(stats), batch.n))
    mask = np.ones((len(stats), batch.n), dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            data[:, i] = _image_stats(_as_bytes(value), decode)
            mask[:, i] = False
        except Exception:  # PIL on untrusted bytes: count, never crash
            batch.error()
    for j, stat in enumerate(stats):
        batch.numeric(f"{name}.{stat}", field, data[j], mask[j])


def _put(row: dict[str, Any], name: str, value: Any) -> None:
    if isinstance(value, list):
        row[f"{name}.len"] = len(value)
    elif isinstance(value, _JSON_SCALARS):
        row[name] = value


def _flatten_json(obj: Any, name: str) -> dict[str, Any]:
    """Top-level keys and one nested object level as dotted names; lists become lengths."""
    row: dict[str, Any] = {}
    if not isinstance(obj, dict):
        _put(row, name, obj)
        return row
    for key, value in obj.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if not isinstance(inner, dict):
                    _put(row, f"{name}.{key}.{sub}", inner)
        else:
            _put(row, f"{name}.{key}", value)
    return row


def _value_kind(value: Any) -> str | None:
    if isinstance(value, _CATEGORIES):
        return "categorical"
    if isinstance(value, _NUMBERS):
        return "numeric"
    return None


def _records_features(batch: _Batch, field: str, rows: list[dict[str, Any] | None]) -> None:
    """Columns from per-sample ``{name: scalar}`` rows; a value of the other kind is an error."""
    names = dict.fromkeys(name for row in rows if row for name in row)
    for name in sorted(names):
        values = [row.get(name) if row else None for row in rows]
        kind = batch.known_kind(name) or next(_value_kind(v) for v in values if v is not None)
        if kind == "numeric":
            checked = [v if _value_kind(v) == "numeric" else None for v in values]
            batch.error(sum(v is not None for v in values) - sum(v is not None for v in checked))
            _numeric_features(batch, name, field, checked)
        else:
            _categorical_features(batch, name, field, values)


def _json_features(batch: _Batch, name: str, field: str, values: list[Any]) -> None:
    rows = [None if v is None else _flatten_json(v, name) for v in values]
    _records_features(batch, field, rows)


# -- featurizers ------------------------------------------------------------------------------


class Featurizer(ABC):
    """Maps a list of samples to a ``FeatureBatch`` (one entry per sample, in order).

    ``fingerprint`` is a stable sha256 hex of ``describe()`` and ``FEATURES_VERSION``: equal
    across processes and runs for the same featurization. ``schema`` maps every feature name
    seen so far to ``{"kind", "field"}``. ``errors`` counts values that could not be featurized.
    """

    errors: int = 0

    @abstractmethod
    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        """Featurize a batch of samples."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-safe description of the featurization (what the fingerprint hashes)."""

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the class name, ``describe()`` and ``FEATURES_VERSION``."""
        spec = {"featurizer": type(self).__name__, "version": FEATURES_VERSION}
        return _digest({**spec, "spec": self.describe()})

    @property
    def _schema(self) -> dict[str, dict[str, Any]]:
        return self.__dict__.setdefault("_schema_store", {})

    @property
    def schema(self) -> dict[str, dict[str, Any]]:
        """``{name: {"kind", "field"}}`` for every feature produced so far, sorted by name."""
        return {name: dict(info) for name, info in sorted(self._schema.items())}

    def _run(
        self, samples: Sequence[Mapping[str, Any]], build: Callable[[_Batch], None]
    ) -> FeatureBatch:
        if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
            raise TypeError(f"samples must be a list of dicts, got {type(samples).__name__}")
        for sample in samples:
            if not isinstance(sample, Mapping):
                raise TypeError(f"each sample must be a dict, got {type(sample).__name__}")
        batch = _Batch(self, samples)
        if samples:
            build(batch)
        return batch.result()


def _check_max_vector(max_vector: int) -> int:
    if isinstance(max_vector, bool) or not isinstance(max_vector, int) or max_vector < 0:
        raise ValueError(f"max_vector must be an int >= 0, got {max_vector!r}")
    return max_vector


def _check_flag(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def default_kind(field: str) -> str | None:
    """The ``FeatureSpec`` kind the default featurizer uses for a field, or None (skipped)."""
    ext = extension(field)
    for kind, exts in (
        ("array", ARRAY_EXTENSIONS),
        ("categorical", LABEL_EXTENSIONS),
        ("json", JSON_EXTENSIONS),
        ("text", TEXT_EXTENSIONS),
        ("image", IMAGE_EXTENSIONS),
    ):
        if ext in exts:
            return kind
    return None


def _decoder_name(field: str, kind: str) -> str:
    """Which decoder reads a whole field for a spec kind."""
    ext = extension(field)
    if kind in ("vector", "summary", "array"):
        return "npy"
    if kind == "json":
        return "json"
    if kind == "image":
        return "bytes"
    if ext in ARRAY_EXTENSIONS or ext in JSON_EXTENSIONS:
        return "npy" if ext in ARRAY_EXTENSIONS else "json"
    return "label" if kind == "categorical" else "text"


def _features_of_kind(
    batch: _Batch,
    name: str,
    field: str,
    kind: str,
    values: list[Any],
    max_vector: int,
    decode_images: bool,
) -> None:
    """Dispatch decoded values of one field (or JSON path) to the step for ``kind``."""
    if kind in ("vector", "summary", "array"):
        _array_features(batch, name, field, values, kind, max_vector)
    elif kind == "numeric":
        _numeric_features(batch, name, field, values)
    elif kind == "categorical":
        _categorical_features(batch, name, field, values)
    elif kind == "text":
        _text_features(batch, name, field, values)
    elif kind == "json":
        _json_features(batch, name, field, values)
    else:
        _image_features(batch, name, field, values, decode_images)


class DefaultFeaturizer(Featurizer):
    """Infers features from each field's extension (see the module docstring for names).

    ``fields`` restricts featurization to those fields (each must have a default featurizer);
    ``None`` featurizes every non-``__`` field and warns once per field it has to skip.

    >>> batch = DefaultFeaturizer()([{"__key__": "a", "cls": b"3"}])
    >>> batch["cls"].values.tolist()
    ['3']
    """

    def __init__(
        self, fields: Sequence[str] | None = None, max_vector: int = 64, decode_images: bool = False
    ) -> None:
        self.fields = None if fields is None else self._check_fields(fields)
        self.max_vector = _check_max_vector(max_vector)
        self.decode_images = _check_flag("decode_images", decode_images)
        self.errors = 0
        self._warned: set[str] = set()

    @staticmethod
    def _check_fields(fields: Sequence[str]) -> tuple[str, ...]:
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise ValueError(f"fields must be a list of field names, got {fields!r}")
        for field in fields:
            if not isinstance(field, str) or not field or field.startswith("__"):
                raise ValueError(f"bad field name {field!r}")
            if default_kind(field) is None:
                raise ValueError(
                    f"field {field!r} has no default featurizer; name it in a FeatureSpec "
                    "or pass a callable"
                )
        return tuple(dict.fromkeys(fields))

    def describe(self) -> dict[str, Any]:
        fields = None if self.fields is None else sorted(self.fields)
        return {
            "fields": fields,
            "max_vector": self.max_vector,
            "decode_images": self.decode_images,
        }

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self._run(samples, self._build)

    def _build(self, batch: _Batch) -> None:
        fields = self.fields or dict.fromkeys(
            k for s in batch.samples for k in s if not k.startswith("__")
        )
        for field in fields:
            kind = default_kind(field)
            if kind is None:
                self._warn_skipped(field)
                continue
            raws = [s.get(field) for s in batch.samples]
            values = _decode_all(batch, raws, _DECODERS[_decoder_name(field, kind)])
            _features_of_kind(
                batch, field, field, kind, values, self.max_vector, self.decode_images
            )

    def _warn_skipped(self, field: str) -> None:
        if field not in self._warned:
            self._warned.add(field)
            warnings.warn(
                f"field {field!r} has no default featurizer; skipped", FeatureWarning, stacklevel=4
            )


def _split_key(key: str) -> tuple[str, str | None]:
    """``"json.size"`` -> ``("json", "size")``; ``"meta.json.a.b"`` -> ``("meta.json", "a.b")``."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.lower() in JSON_EXTENSIONS:
            return ".".join(parts[: i + 1]), ".".join(parts[i + 1 :])
    return key, None


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


class FeatureSpec:
    """An explicit choice of features: ``{key: kind}`` plus optional per-key transforms.

    A key is a field name (``"x.npy"``, ``"cls"``) or a path into a JSON field
    (``"json.size"``, ``"meta.json.box.w"``). Kinds (``SPEC_KINDS``): ``auto`` (the default
    featurizer's choice for the field), ``numeric`` (a number, numeric text or size-1 array),
    ``categorical``, ``text``, ``vector`` (one feature per array element), ``summary`` (mean,
    std, min, max, size), ``array`` (vector up to ``max_vector`` values, else summary), ``json``
    (flattened) and ``image``. A transform gets the decoded value (array, str, parsed JSON value,
    or image bytes) and returns the value to featurize; its exceptions raise ``FeaturizeError``.
    Names follow the default rules with the key as prefix.

    >>> spec = FeatureSpec({"x.npy": "summary", "cls": "categorical", "json.size": "numeric"})
    """

    def __init__(
        self,
        features: Mapping[str, str],
        transforms: Mapping[str, Callable[[Any], Any]] | None = None,
        *,
        max_vector: int = 64,
        decode_images: bool = False,
    ) -> None:
        self.features = self._check_features(features)
        self.transforms = self._check_transforms(transforms or {}, self.features)
        self.max_vector = _check_max_vector(max_vector)
        self.decode_images = _check_flag("decode_images", decode_images)

    @staticmethod
    def _check_features(features: Mapping[str, str]) -> dict[str, str]:
        if not isinstance(features, Mapping) or not features:
            raise ValueError(f"features must be a non-empty dict of key -> kind, got {features!r}")
        for key, kind in features.items():
            if not isinstance(key, str) or not key or key.startswith("__"):
                raise ValueError(f"bad feature key {key!r}")
            if kind not in SPEC_KINDS:
                raise ValueError(
                    f"feature {key!r}: unknown kind {kind!r}; expected one of {SPEC_KINDS}"
                )
            path = _split_key(key)[1]
            if path is not None and kind == "image":
                raise ValueError(f"feature {key!r}: a JSON path cannot be an image")
            if path is None and kind == "auto" and default_kind(key) is None:
                raise ValueError(f"feature {key!r}: 'auto' needs a known extension; name a kind")
        return dict(features)

    @staticmethod
    def _check_transforms(
        transforms: Mapping[str, Callable[[Any], Any]], features: dict[str, str]
    ) -> dict[str, Callable[[Any], Any]]:
        if not isinstance(transforms, Mapping):
            raise ValueError(f"transforms must be a dict of key -> callable, got {transforms!r}")
        for key, fn in transforms.items():
            if key not in features:
                raise ValueError(f"transform for {key!r}, which is not a feature of the spec")
            if not callable(fn):
                raise ValueError(f"transform for {key!r} is not callable: {fn!r}")
        return dict(transforms)

    def describe(self) -> dict[str, Any]:
        """JSON-safe description; transforms by qualified name and source hash."""
        return {
            "features": dict(sorted(self.features.items())),
            "transforms": {k: callable_identity(fn) for k, fn in sorted(self.transforms.items())},
            "max_vector": self.max_vector,
            "decode_images": self.decode_images,
        }

    def featurizer(self) -> SpecFeaturizer:
        """A fresh featurizer for this spec."""
        return SpecFeaturizer(self)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of this spec's featurizer."""
        return self.featurizer().fingerprint


class SpecFeaturizer(Featurizer):
    """Featurizes exactly the keys of a ``FeatureSpec``; each field is decoded once per sample."""

    def __init__(self, spec: FeatureSpec) -> None:
        if not isinstance(spec, FeatureSpec):
            raise ValueError(f"spec must be a FeatureSpec, got {spec!r}")
        self.spec = spec
        self.errors = 0

    def describe(self) -> dict[str, Any]:
        return self.spec.describe()

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self._run(samples, self._build)

    def _build(self, batch: _Batch) -> None:
        decoded: dict[tuple[str, str], list[Any]] = {}
        for key in sorted(self.spec.features):
            kind = self.spec.features[key]
            field, path = _split_key(key)
            if kind == "auto":
                kind = "json" if path is not None else default_kind(field)  # type: ignore[assignment]
            decoder = "json" if path is not None else _decoder_name(field, kind)
            if (field, decoder) not in decoded:
                raws = [s.get(field) for s in batch.samples]
                decoded[field, decoder] = _decode_all(batch, raws, _DECODERS[decoder])
            values = decoded[field, decoder]
            if path is not None:
                values = [None if v is None else _lookup(v, path) for v in values]
            if key in self.spec.transforms:
                values = _transform_all(batch, key, values, self.spec.transforms[key])
            _features_of_kind(
                batch, key, field, kind, values, self.spec.max_vector, self.spec.decode_images
            )


class CallableFeaturizer(Featurizer):
    """Wraps ``fn(sample) -> {name: value}``: numbers -> numeric, str and bool -> categorical,
    None -> missing. Exceptions from ``fn`` raise ``FeaturizeError`` naming key and shard."""

    def __init__(self, fn: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> None:
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.errors = 0

    def describe(self) -> dict[str, Any]:
        return {"callable": callable_identity(self.fn)}

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self._run(samples, self._build)

    def _row(self, batch: _Batch, i: int) -> dict[str, Any]:
        try:
            row = self.fn(batch.samples[i])
        except Exception as e:
            raise batch.fail(
                i, f"featurizer {callable_identity(self.fn)['name']} failed: {e!r}"
            ) from e
        if not isinstance(row, Mapping):
            raise batch.fail(i, f"featurizer returned {type(row).__name__}, expected a dict")
        for name, value in row.items():
            if not isinstance(name, str):
                raise batch.fail(i, f"feature name {name!r} is not a str")
            if value is not None and _value_kind(value) is None:
                raise batch.fail(i, f"feature {name!r}: unsupported value {type(value).__name__}")
        return {k: v for k, v in row.items() if v is not None}

    def _build(self, batch: _Batch) -> None:
        rows: list[dict[str, Any] | None] = [self._row(batch, i) for i in range(batch.n)]
        _records_features(batch, "", rows)


def featurizer_from(obj: Any) -> Featurizer:
    """None -> ``DefaultFeaturizer()``; a ``FeatureSpec`` -> its featurizer; a ``Featurizer`` ->
    itself; any other callable -> ``CallableFeaturizer(obj)``."""
    if obj is None:
        return DefaultFeaturizer()
    if isinstance(obj, Featurizer):
        return obj
    if isinstance(obj, FeatureSpec):
        return obj.featurizer()
    if callable(obj):
        return CallableFeaturizer(obj)
    raise ValueError(
        f"cannot make a featurizer from {obj!r}; pass None, a FeatureSpec or a callable"
    )
