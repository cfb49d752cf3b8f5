"""Deterministic 64-bit hashes (stable across processes and runs): tokens, token pairs, rows.

``hash()`` is salted per process; stored sketches need hashes that never change.
"""

from __future__ import annotations

import hashlib

import numpy as np

U64 = np.uint64


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finalizer: a fast, well-mixed deterministic 64-bit hash."""
    with np.errstate(over="ignore"):
        x = (x + U64(0x9E3779B97F4A7C15)).astype(U64)
        x = (x ^ (x >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> U64(27))) * U64(0x94D049BB133111EB)
        return x ^ (x >> U64(31))


def token_hash(token: str) -> int:
    """Deterministic 64-bit hash of a token (blake2b; stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def bigram_hash(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Deterministic 64-bit hash of token pairs from their token hashes (vectorised)."""
    a = np.asarray(first, dtype=U64)
    b = np.asarray(second, dtype=U64)
    return splitmix64(splitmix64(a) ^ (b * U64(0x2545F4914F6CDD1D)))
