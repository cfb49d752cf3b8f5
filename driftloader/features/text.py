"""Text features: length, words and character-class ratios (vectorised), plus the text as tokens."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftloader.features.base import BatchBuilder

TEXT_STATS = ("len", "words", "alpha_ratio", "digit_ratio", "upper_ratio", "space_ratio")

_ALPHA, _DIGIT, _UPPER, _SPACE = 1, 2, 4, 8


def _char_flags(ch: str) -> int:
    return (
        _ALPHA * ch.isalpha()
        + _DIGIT * ch.isdigit()
        + _UPPER * ch.isupper()
        + _SPACE * ch.isspace()
    )


_ASCII_FLAGS = np.array([_char_flags(chr(c)) for c in range(128)], dtype=np.uint8)


def text_stats(texts: list[str]) -> np.ndarray:
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


def text_features(batch: BatchBuilder, name: str, field: str, values: list[Any]) -> None:
    """``<name>.len/.words/..._ratio`` numeric columns and ``<name>.tokens``."""
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
        data[:, rows_at] = text_stats([texts[i] for i in rows_at])  # type: ignore[misc]
        mask[:, rows_at] = False
    for j, stat in enumerate(TEXT_STATS):
        batch.numeric(f"{name}.{stat}", field, data[j], mask[j])
    batch.objects("tokens", f"{name}.tokens", field, texts)
