"""Counts of hashed word unigrams (and bigrams) of a text stream over a fixed number of buckets."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np

from driftloader.sketches.base import Sketch, register_sketch
from driftloader.sketches.encoding import (
    ARRAY_DTYPES,
    check_int,
    decode_array,
    encode_array,
    read_int,
    smallest_uint_dtype,
    split_objects,
)
from driftloader.sketches.hashing import U64, bigram_hash, token_hash

try:  # Python >= 3.11
    from typing import Self
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

DEFAULT_TOKEN_BUCKETS = 4096
_TOKEN_RE = re.compile(r"\w+|\x00")
_DOC_SEP = "\x00"


def _tokenize_batch(texts: np.ndarray) -> list[str]:
    """All lowercase ``\\w+`` tokens of the texts, with a NUL token between documents."""
    return _TOKEN_RE.findall(_DOC_SEP.join(map(str, texts)).lower())


def _hashed(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every token, True where it is a word rather than a document separator),
    hashing each distinct token once."""
    uniq, inv = np.unique(tokens, return_inverse=True)
    inv = inv.ravel()
    hashes = np.fromiter((token_hash(t) for t in uniq.tolist()), dtype=U64, count=uniq.size)
    is_word = inv != 0 if uniq[0] == _DOC_SEP else np.ones(inv.size, dtype=bool)
    return hashes[inv], is_word


@register_sketch
class HashedTokens(Sketch):
    """Counts of hashed word unigrams (and bigrams with ``ngrams=2``) over ``buckets`` buckets.

    Tokens are lowercase ``\\w+`` words hashed with blake2b (deterministic, unlike ``hash()``);
    bigrams never span two documents. ``tokens`` counts words; ``counts`` also holds bigrams.
    """

    kind: ClassVar[str] = "tokens"
    format: ClassVar[int] = 2  # counts as typed arrays; format 1 (JSON lists) still loads
    reads: ClassVar[tuple[int, ...]] = (1, 2)

    def __init__(self, buckets: int = DEFAULT_TOKEN_BUCKETS, ngrams: int = 1) -> None:
        self.buckets = check_int("buckets", buckets, 1, 1 << 24)
        self.ngrams = check_int("ngrams", ngrams, 1, 2)
        self.n = 0
        self.docs = 0
        self.tokens = 0
        self.missing = 0
        self.counts = np.zeros(self.buckets, dtype=np.int64)

    def params(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "ngrams": self.ngrams}

    def update(self, batch: np.ndarray) -> Self:
        present, missing = split_objects(batch)
        self.n += present.size + missing
        self.missing += missing
        self.docs += present.size
        tokens = _tokenize_batch(present) if present.size else []
        if tokens:
            self._count(np.array(tokens, dtype=object))
        return self

    def _count(self, tokens: np.ndarray) -> None:
        h, is_word = _hashed(tokens)
        self.tokens += int(is_word.sum())
        for grams in self._grams(h, is_word):
            if grams.size:
                self.counts += np.bincount(self._bucket(grams), minlength=self.buckets)

    def _grams(self, h: np.ndarray, is_word: np.ndarray) -> list[np.ndarray]:
        """Hashes of the unigrams, then of the bigrams (``ngrams=2``), in stream order."""
        grams = [h[is_word]]
        if self.ngrams == 2 and h.size > 1:
            pair = is_word[:-1] & is_word[1:]
            grams.append(bigram_hash(h[:-1][pair], h[1:][pair]))
        return grams

    def _bucket(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes % U64(self.buckets)).astype(np.intp)

    def document_buckets(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(document, bucket) of every n-gram this sketch counts in ``texts`` (an object array,
        ``None`` = missing), with documents indexed by position in ``texts``: what a
        per-document score over buckets (a log-likelihood ratio) needs. Over all documents the
        buckets are exactly those ``update(texts)`` counts."""
        values = np.asarray(texts, dtype=object).ravel()
        present = np.flatnonzero(~np.equal(values, None))
        pieces = [str(t).lower() for t in values[present].tolist()]
        joined = _DOC_SEP.join(pieces)  # what update tokenizes (lowercasing commutes with join)
        found = [(m.group(), m.start()) for m in _TOKEN_RE.finditer(joined)]
        if not found:
            return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
        tokens, at = zip(*found)
        h, is_word = _hashed(np.array(tokens, dtype=object))
        # a document's tokens start at or after its first character (a NUL inside a text is a
        # separator token, as in update, but does not start a document)
        starts = np.cumsum([0] + [len(piece) + 1 for piece in pieces[:-1]])
        doc = present[np.searchsorted(starts, np.array(at), side="right") - 1]
        docs, buckets = [doc[is_word]], []
        for i, grams in enumerate(self._grams(h, is_word)):
            buckets.append(self._bucket(grams))
            if i:  # a bigram belongs to the document of its first word
                docs.append(doc[:-1][is_word[:-1] & is_word[1:]])
        return np.concatenate(docs), np.concatenate(buckets)

    def _merge(self, other: HashedTokens) -> None:
        self.n += other.n
        self.docs += other.docs
        self.tokens += other.tokens
        self.missing += other.missing
        self.counts += other.counts

    def _state(self) -> dict[str, Any]:
        counts = {"n": self.n, "docs": self.docs, "tokens": self.tokens, "missing": self.missing}
        nz = np.flatnonzero(self.counts)
        values = self.counts[nz]
        count_dtype, index_dtype = smallest_uint_dtype(values), smallest_uint_dtype(nz)
        sparse = nz.size * (_SIZE[index_dtype] + _SIZE[count_dtype])
        if sparse >= self.buckets * _SIZE[count_dtype]:  # most buckets used: store them all
            return {**counts, "counts": encode_array(self.counts, count_dtype)}
        return {
            **counts,
            "buckets_used": encode_array(nz, index_dtype),
            "bucket_counts": encode_array(values, count_dtype),
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], d: dict[str, Any]) -> Self:
        sk = cls(read_int(params, "buckets", 1), read_int(params, "ngrams", 1))
        for key in ("n", "docs", "tokens", "missing"):
            setattr(sk, key, read_int(d, key))
        if sk.docs + sk.missing != sk.n:
            raise ValueError(f"docs ({sk.docs}) + missing ({sk.missing}) != n ({sk.n})")
        if d["format"] == 2 and "counts" in d:
            dense = _decode_uints(d["counts"])
            if dense.shape != (sk.buckets,):
                raise ValueError(f"'counts' must hold {sk.buckets} buckets, got {dense.shape}")
            sk.counts[:] = dense
            return sk
        if d["format"] == 2:
            idx, vals = _decode_uints(d["buckets_used"]), _decode_uints(d["bucket_counts"])
        else:
            idx = np.asarray(d["buckets_used"], dtype=np.int64)
            vals = np.asarray(d["bucket_counts"], dtype=np.int64)
        if idx.ndim != 1 or idx.shape != vals.shape or np.any(vals < 0):
            raise ValueError("'buckets_used' and 'bucket_counts' must be equal-length lists")
        if idx.size and (idx.min() < 0 or idx.max() >= sk.buckets):
            raise ValueError(f"bucket index out of range [0, {sk.buckets})")
        sk.counts[idx] = vals
        return sk


_SIZE = {dtype: np.dtype(dtype).itemsize for dtype in ARRAY_DTYPES}
_UINTS = ("<u1", "<u2", "<u4", "<u8")


def _decode_uints(d: Any) -> np.ndarray:
    """A 1-D typed array of unsigned ints as int64 (ValueError past int64's range)."""
    raw = decode_array(d, _UINTS, np.uint64)
    if raw.ndim != 1 or (raw.size and int(raw.max()) > np.iinfo(np.int64).max):
        raise ValueError(f"expected a 1-D array of counts below 2^63, got shape {raw.shape}")
    return raw.astype(np.int64)
