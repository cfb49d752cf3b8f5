"""Mergeable streaming sketches: bounded-memory sufficient statistics for one feature.

Every sketch has the same small verbs (``update``, ``merge``, ``to_dict``, ``from_dict``,
``copy``) so profiles can hold, merge and store them without knowing their kind. Kinds are
looked up by name in ``SKETCHES`` when loading, never imported from a dotted path in data.
One module per kind (moments, quantiles, categorical, tokens, reservoir); the interface and
the registry are in base.py.

Example::

    >>> a = Moments().update(np.array([1.0, 2.0]))
    >>> b = Moments().update(np.array([3.0]))
    >>> a.merge(b).mean
    2.0
"""

from driftloader.sketches.base import FORMAT, SKETCHES, Sketch, register_sketch, sketch_from_dict
from driftloader.sketches.categorical import (
    DEFAULT_CATEGORICAL_CAP,
    HLL_LG_K,
    CategoricalCounts,
)
from driftloader.sketches.encoding import decode_float, encode_float
from driftloader.sketches.hashing import bigram_hash, token_hash
from driftloader.sketches.moments import Moments
from driftloader.sketches.quantiles import DEFAULT_QUANTILE_K, Quantiles
from driftloader.sketches.reservoir import DEFAULT_RESERVOIR_K, Reservoir
from driftloader.sketches.tokens import DEFAULT_TOKEN_BUCKETS, HashedTokens

__all__ = [
    "DEFAULT_CATEGORICAL_CAP",
    "DEFAULT_QUANTILE_K",
    "DEFAULT_RESERVOIR_K",
    "DEFAULT_TOKEN_BUCKETS",
    "FORMAT",
    "HLL_LG_K",
    "SKETCHES",
    "CategoricalCounts",
    "HashedTokens",
    "Moments",
    "Quantiles",
    "Reservoir",
    "Sketch",
    "bigram_hash",
    "decode_float",
    "encode_float",
    "register_sketch",
    "sketch_from_dict",
    "token_hash",
]
