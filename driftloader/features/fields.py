"""Field inference and scalar features: which kind a field is, decoding its bytes, and numbers,
categories and flattened JSON records as columns (with a bounded number of JSON keys per field).
"""

from __future__ import annotations

import json
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from driftloader.features.base import (
    ARRAY_EXTENSIONS,
    IMAGE_EXTENSIONS,
    JSON_EXTENSIONS,
    LABEL_EXTENSIONS,
    TEXT_EXTENSIONS,
    BatchBuilder,
    FeatureWarning,
    as_bytes,
    extension,
)
from driftloader.npy import load_npy

DEFAULT_MAX_KEYS = 128
"""Features one JSON field may make per shard; further keys go to ``<field>.other_keys``."""

# isinstance targets as tuples: a ``X | Y`` union is rebuilt on every call, which is slow here.
_BOOLS = (bool, np.bool_)
_NUMBERS = (numbers.Real, np.number)
_JSON_SCALARS = (str, bool, int, float)
_CATEGORIES = (str, bool, np.bool_)


def decode_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else bytes(as_bytes(raw)).decode("utf-8")


def decode_label(raw: Any) -> str:
    text = decode_text(raw).strip()
    try:
        return str(int(text))
    except ValueError:
        return text


def decode_json(raw: Any) -> Any:
    return json.loads(raw if isinstance(raw, str) else bytes(as_bytes(raw)))


def decode_numeric_npy(raw: Any) -> np.ndarray:
    """A numeric array from ``.npy`` bytes (``driftloader.npy``, numeric dtypes only)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return load_npy(raw, numeric_only=True)


DECODERS: dict[str, Callable[[Any], Any]] = {
    "npy": decode_numeric_npy,
    "text": decode_text,
    "label": decode_label,
    "json": decode_json,
    "bytes": as_bytes,
}


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


def decoder_name(field: str, kind: str) -> str:
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


def number(value: Any) -> float | None:
    """A float for a JSON/Python/numpy number or a size-1 numeric array; None otherwise (also for
    an integer too large for a float, such as a 400-digit JSON integer)."""
    if isinstance(value, _BOOLS):
        return None
    try:
        if isinstance(value, _NUMBERS):
            return float(value)
        if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
            return float(value.reshape(-1)[0])
    except OverflowError:
        return None
    return None


def category(value: Any) -> str | None:
    """A category string for str, bool, int, float or a size-1 array; None otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, _BOOLS):
        return "true" if value else "false"
    try:
        if isinstance(value, numbers.Integral):
            return str(int(value))
        if isinstance(value, numbers.Real):
            return repr(float(value))
    except (OverflowError, ValueError):  # ValueError: past Python's int-to-str digit limit
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        return category(value.reshape(-1)[0].item())
    return None


def numeric_features(batch: BatchBuilder, name: str, field: str, values: list[Any]) -> None:
    """One numeric column; values that are not numbers (nor numeric text) count as errors."""
    data = np.zeros(batch.n)
    mask = np.ones(batch.n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            continue
        x = number(value)
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


def categorical_features(batch: BatchBuilder, name: str, field: str, values: list[Any]) -> None:
    """One categorical column; values with no category string count as errors."""
    out: list[str | None] = [None] * batch.n
    for i, value in enumerate(values):
        if value is None:
            continue
        out[i] = category(value)
        if out[i] is None:
            batch.error()
    batch.objects("categorical", name, field, out)


def _put(row: dict[str, Any], name: str, value: Any) -> None:
    if isinstance(value, list):
        row[f"{name}.len"] = len(value)
    elif isinstance(value, _JSON_SCALARS):
        row[name] = value


def flatten_json(obj: Any, name: str) -> dict[str, Any]:
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


def value_kind(value: Any) -> str | None:
    """``"categorical"`` for str and bool, ``"numeric"`` for numbers, None otherwise."""
    if isinstance(value, _CATEGORIES):
        return "categorical"
    if isinstance(value, _NUMBERS):
        return "numeric"
    return None


def records_features(batch: BatchBuilder, field: str, rows: list[dict[str, Any] | None]) -> None:
    """Columns from per-sample ``{name: scalar}`` rows; a value of the other kind is an error."""
    names = dict.fromkeys(name for row in rows if row for name in row)
    for name in sorted(names):
        values = [row.get(name) if row else None for row in rows]
        kind = batch.known_kind(name) or next(value_kind(v) for v in values if v is not None)
        if kind == "numeric":
            checked = [v if value_kind(v) == "numeric" else None for v in values]
            batch.error(sum(v is not None for v in values) - sum(v is not None for v in checked))
            numeric_features(batch, name, field, checked)
        else:
            categorical_features(batch, name, field, values)


def _admit(batch: BatchBuilder, field: str, rows: list[dict[str, Any] | None], cap: int) -> bool:
    """Admit this batch's names of ``field`` in sample order until the shard's cap is reached;
    True when some names were left out (warned once per field)."""
    admitted = batch.state.keys_of(batch.shard, field)
    over = False
    for row in rows:
        for name in row or ():
            if name not in admitted:
                if len(admitted) >= cap:
                    over = True
                    continue
                admitted[name] = None
    if over and field not in batch.state.warned:
        batch.state.warned.add(field)
        warnings.warn(
            f"JSON field {field!r} has more than {cap} distinct keys in shard {batch.shard!r}; "
            f"further keys are summarised in {field}.other_keys (count and hashed names)",
            FeatureWarning,
            stacklevel=6,
        )
    return over


def json_features(
    batch: BatchBuilder, name: str, field: str, values: list[Any], max_keys: int
) -> None:
    """Flattened JSON columns; past ``max_keys`` names per shard, the rest become
    ``<name>.other_keys`` (how many per sample) and ``<name>.other_keys.names`` (hashed tokens)."""
    rows = [None if v is None else flatten_json(v, name) for v in values]
    if not _admit(batch, name, rows, max_keys):
        records_features(batch, field, rows)
        return
    admitted = batch.state.keys_of(batch.shard, name)
    kept: list[dict[str, Any] | None] = []
    counts = np.zeros(batch.n)
    others: list[str | None] = [None] * batch.n
    for i, row in enumerate(rows):
        if row is None:
            kept.append(None)
            continue
        extra = [k[len(name) + 1 :] for k in row if k not in admitted]
        kept.append({k: v for k, v in row.items() if k in admitted})
        counts[i] = len(extra)
        others[i] = " ".join(extra)
    records_features(batch, field, kept)
    batch.numeric(f"{name}.other_keys", field, counts, np.array([r is None for r in rows]))
    batch.objects("tokens", f"{name}.other_keys.names", field, others)
