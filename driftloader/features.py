"""Featurizers: sample dicts -> batches of feature columns (numpy), with a stable fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["numeric", "categorical", "tokens"]


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
