"""Numeric array features: one feature per element for small vectors (plus their joint
projections), summaries (mean, std, min, max, size) for large arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftloader.features.base import BatchBuilder
from driftloader.features.joint import JointOptions, project
from driftloader.npy import check_dtype

SUMMARY_STATS = ("mean", "std", "min", "max", "size")


def to_arrays(batch: BatchBuilder, values: list[Any]) -> list[np.ndarray | None]:
    """Numeric arrays of the present values; anything else counts as an error."""
    out: list[np.ndarray | None] = [None] * len(values)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            arr = np.asarray(value)
            check_dtype(arr.dtype, numeric_only=True)
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


def vector_rows(
    batch: BatchBuilder, arrays: list[np.ndarray | None], rows_at: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(width, n)`` values and mask of the flattened arrays at ``rows_at`` (others masked)."""
    width = max(arrays[i].size for i in rows_at)  # type: ignore[union-attr]
    data = np.zeros((width, batch.n))
    mask = np.ones((width, batch.n), dtype=bool)
    if width:
        rows, row_mask = _stack_rows([arrays[i] for i in rows_at], width)  # type: ignore[misc]
        data[:, rows_at] = rows.T
        mask[:, rows_at] = row_mask.T
    return data, mask


def element_features(
    batch: BatchBuilder,
    name: str,
    field: str,
    data: np.ndarray,
    mask: np.ndarray,
    joint: JointOptions | None,
) -> None:
    """``name[i]`` per element, and the joint projections of the whole vector."""
    for j in range(data.shape[0]):
        batch.numeric(f"{name}[{j}]", field, data[j], mask[j])
    if joint is not None and joint.vectors and data.shape[0]:
        project(batch, joint, name, data.T, mask.T)


def summary_features(
    batch: BatchBuilder, name: str, field: str, arrays: list[np.ndarray | None], rows_at: list[int]
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


def array_features(
    batch: BatchBuilder,
    name: str,
    field: str,
    values: list[Any],
    mode: str,
    max_vector: int,
    joint: JointOptions | None = None,
) -> None:
    """Element features for small arrays, summaries for large ones (``mode`` may force either:
    ``"vector"``, ``"summary"``, or ``"array"`` to choose by size)."""
    arrays = to_arrays(batch, values)
    present = [i for i, a in enumerate(arrays) if a is not None]
    small = [
        i for i in present if mode == "vector" or (mode == "array" and arrays[i].size <= max_vector)
    ]  # type: ignore[union-attr]
    large = sorted(set(present) - set(small))
    if small:
        data, mask = vector_rows(batch, arrays, small)
        element_features(batch, name, field, data, mask, joint)
    if large:
        summary_features(batch, name, field, arrays, large)
