"""What a closed serving window becomes: its comparison without the features requests do not
carry, its flat row, and its profile and catalog row in the store (the storing thread's loop)."""

from __future__ import annotations

import dataclasses
import math
import queue
import warnings
from typing import Any

from .drift import ShardDrift
from .profile import Profile
from .store import ProfileStore

TOP_FEATURES = 5
Row = dict[str, Any]


class MonitorWarning(RuntimeWarning):
    """Something the monitor could not do in the background (samples dropped, a store write or a
    callback failed); the monitor goes on."""


def _is_unserved(feature: str, unserved: tuple[str, ...]) -> bool:
    """True when ``feature`` is one of ``unserved`` or a feature of one of those fields."""
    return any(feature == u or feature.startswith((u + ".", u + "[")) for u in unserved)


def without_unserved(result: ShardDrift, unserved: tuple[str, ...]) -> ShardDrift:
    """``result`` without the schema drift of features missing because they are ``unserved``
    (labels a request does not carry); ``drifted`` and ``score`` recomputed from the rest."""
    gone = {n for n in result.schema.get("missing", ()) if _is_unserved(n, unserved)}
    if not gone:
        return result
    features = [f for f in result.features if not (f.metric == "schema" and f.name in gone)]
    schema = dict(result.schema)
    schema["missing"] = [n for n in schema["missing"] if n not in gone]
    if not schema["missing"]:
        del schema["missing"]
    return dataclasses.replace(
        result,
        features=features,
        schema=schema,
        drifted=bool(schema) or any(f.drifted for f in features),
        score=max((f.score for f in features), default=0.0),
    )


def window_row(profile: Profile, result: ShardDrift | None, preprocessing: str | None) -> Row:
    """The flat row of a compared window (``ServingMonitor.report``)."""
    info = profile.meta["serving"]
    top = [] if result is None else [f.name for f in result.top(TOP_FEATURES) if f.drifted]
    row: Row = {
        "window": info["window"],
        "start": info["start"],
        "end": info["end"],
        "n": profile.n,
        "observed": info["observed"],
        "dropped": info["dropped"],
        "errors": profile.errors,
        "drifted": bool(result is not None and result.drifted),
        "score": float(result.score) if result is not None else math.nan,
        "top": top,
        "preprocessing": preprocessing,
        "stored": False,
        "url": profile.url,
        "run": info["run"],
    }
    if result is None:
        row["error"] = "no sample of the window could be featurized"
    return row


def write_loop(writes: queue.Queue) -> None:
    """The storing thread: each closed window's profile and catalog row, in order."""
    while True:
        job = writes.get()
        if job is None:
            return
        if callable(job):  # a flush marker: everything before it is written
            job()
            continue
        store, profile, result, reference, row, done, spooled = job
        try:
            if spooled is not None:
                spooled.sync()  # on the disk while it waits for the store
            store_window(store, profile, result, reference, row)
            if spooled is not None:
                spooled.done()  # the spool may forget it
        except Exception as e:  # storage down: the window's row says so; the monitor goes on
            warnings.warn(
                f"ServingMonitor: could not store window {row['window']} in {store!r}: {e!r}",
                MonitorWarning,
                stacklevel=2,
            )
            done(row, f"not stored: {e!r}")
            continue
        done(row, None)


def store_window(
    store: ProfileStore, profile: Profile, result: ShardDrift, reference: str, row: Row
) -> None:
    fields = {
        "reference": reference,
        "action": "served",
        "decided": row["end"],
        "start": row["start"],
        "end": row["end"],
        "window": row["window"],
        "run": row["run"],
        "preprocessing": row["preprocessing"],
        "drifted": result.drifted,
        "score": result.score,
        "top": [f.to_dict() for f in result.top(TOP_FEATURES)],
    }
    if store.put_profile(profile, fields=fields) is None:  # profile and row: one row write
        raise OSError("the store is read-only")
