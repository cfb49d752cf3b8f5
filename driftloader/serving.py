"""``ServingMonitor``: inference traffic compared with the training reference, window by window.

The caller's thread only appends samples to a list under a lock. A background thread converts
them to shard form (``records.as_shard_sample``), featurizes them in batches with the
reference's featurizer, and when a window closes (every ``window`` samples or ``interval``
seconds) compares its profile with the reference by ``drift.compare``, the test used for shards.
A second background thread stores each window's profile in the store (source ``serving``, its
time range in ``meta["serving"]``) and its result in the catalog, so ``driftloader report``
shows serving windows beside the training shards.

Closed windows survive a crash: the caller's thread keeps each window's samples in a local
write-ahead spool (``serving_spool``) until the window is stored, and the next monitor of the
same store and reference stores what a dead process left there.

Backpressure never reaches the caller: when more than ``max_pending`` samples wait to be
featurized, new ones are dropped and counted (``dropped`` in the window's row), with a warning.

Example::

    with ServingMonitor(store, reference="v1", window=1000) as monitor:
        monitor.on_drift(lambda row: print("drift in window", row["window"], row["top"]))
        for request in requests:
            monitor.observe({"x.npy": request.features})
            ...
    monitor.report()   # one row per window
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import math
import os
import queue
import secrets
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .drift import DriftConfig, compare
from .errors import FingerprintMismatch
from .features import DefaultFeaturizer, FeatureSpec, Featurizer, featurizer_from
from .profile import Profile, ProfileConfig
from .records import as_shard_sample
from .serving_spool import RunSpool, SealedWindow, SpooledWindow, default_root, orphaned_runs
from .serving_windows import MonitorWarning, Row, window_row, without_unserved, write_loop
from .sources import redact
from .store import ProfileStore, recorded_featurizer

SOURCE = "serving"
WRITE_BACKLOG = 8  # closed windows waiting for storage before the featurizing thread waits
# A monitor compares window after window for as long as it serves: the shards' family-wise
# alpha (0.01) flagged 1-4 of 1,000 clean windows; 0.001 flagged none and kept the detection
# of a 0.25 sigma shift by the first window (benchmarks/results/serving.md).
SERVING_ALPHA = 0.001


class PreprocessingWarning(UserWarning):
    """The monitor's preprocessing fingerprint is not one the reference was built with."""


DriftCallback = Callable[[Row], Any]


def _check_positive(name: str, value: Any, kind: type | tuple) -> None:
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _fingerprint_text(preprocessing: Any) -> str | None:
    """A preprocessing fingerprint as the store keeps it (``store.preprocessing_of``)."""
    if preprocessing is None or isinstance(preprocessing, str):
        return preprocessing
    try:
        return json.dumps(preprocessing, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"preprocessing must be a str or JSON value, got {preprocessing!r}") from e


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"unserved must be a list of field or feature names, got {names!r}")
    return tuple(names)


def reference_featurizer(reference: Profile, name: str, featurizer: Any = None) -> Featurizer:
    """The featurizer to use against ``reference``: ``featurizer``, or when None the one the
    reference recorded (``store.recorded_featurizer``), refused with ``FingerprintMismatch``
    when its fingerprint is not the reference's."""
    chosen = recorded_featurizer(reference) if featurizer is None else featurizer_from(featurizer)
    if chosen.fingerprint != reference.fingerprint:
        raise FingerprintMismatch(
            f"reference {name!r} was profiled with featurizer {reference.fingerprint[:12]}..., "
            f"but the monitor's {type(chosen).__name__} is {chosen.fingerprint[:12]}...: pass "
            "the featurizer (or FeatureSpec) the reference was profiled with, "
            "ServingMonitor(..., featurizer=...), so serving is featurized as training was"
        )
    return chosen


class _OpenWindow:
    """What the caller's side knows of the window being filled (guarded by the monitor's lock)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.n = 0
        self.dropped = 0
        self.start: float | None = None
        self.end: float | None = None
        self.deadline: float | None = None  # time.monotonic() at which an interval closes it


class ServingMonitor:
    """Watch inference samples against reference ``reference`` of ``store``, window by window.

    ``observe(sample)`` / ``observe([samples])`` take samples shaped as in a shard: a dict of
    field name to bytes, or to decoded values (arrays, numbers, strings, JSON values, PIL
    images), converted to what a shard holds before featurizing (``records.as_shard_sample``).
    A window closes every ``window`` samples and/or ``interval`` seconds after its first sample;
    its profile is compared with the reference (``drift.compare`` with ``config``, by default
    ``DriftConfig(alpha=0.001)``: windows are compared one after another) and stored.
    ``featurizer`` must be the one the reference was profiled with (default featurizer when
    None); another is refused with ``FingerprintMismatch``. ``preprocessing`` is the serving
    side's preprocessing fingerprint: one the reference never saw warns once
    (``PreprocessingWarning``) and labels every stored window; it does not flag windows itself
    (the comparison runs with ``metadata=False``), the data tests do. ``unserved`` names the
    fields (or features) of training samples that requests do not carry, such as labels
    (``unserved=["cls"]``): their absence from a window is expected, not schema drift.

    ``spool`` is the local folder where closed windows wait until stored (None: a folder per
    store, reference and source under ``$DRIFTLOADER_SPOOL`` or ``~/.cache``; False: none): a
    window is written to it when the ``observe`` that closed it returns, and windows a killed process
    left there are compared and stored by the next monitor (``recover``). The storing thread
    fsyncs it before storing; ``spool_fsync=True`` fsyncs on the caller's thread instead, so a
    closed window also survives a machine crash from the moment ``observe`` returns.

    Thread-safe. ``close()`` (or leaving a ``with`` block, or interpreter exit) closes the open
    window and waits until every window is compared and stored.
    """

    def __init__(
        self,
        store: ProfileStore | str,
        reference: str,
        window: int | None = 1000,
        interval: float | None = None,
        *,
        featurizer: Any = None,
        config: DriftConfig | None = None,
        preprocessing: Any = None,
        unserved: Sequence[str] = (),
        source: str = SOURCE,
        batch_size: int = 1000,
        max_pending: int = 100_000,
        profile_config: ProfileConfig | None = None,
        storage_options: dict | None = None,
        spool: str | os.PathLike | bool | None = None,
        spool_fsync: bool = False,
    ) -> None:
        self._check_args(window, interval, batch_size, max_pending, source, config)
        self.store = (
            ProfileStore(os.fspath(store), storage_options)
            if isinstance(store, (str, os.PathLike))
            else store
        )
        if not isinstance(self.store, ProfileStore):
            raise ValueError(f"store must be a ProfileStore or its URL, got {store!r}")
        self.reference_name = reference
        self.reference = self.store.get_reference(reference)
        self.featurizer = reference_featurizer(self.reference, reference, featurizer)
        self._npy_bytes = not (
            featurizer is None or isinstance(featurizer, (FeatureSpec, DefaultFeaturizer))
        )
        self.window, self.interval = window, interval
        self.config = dataclasses.replace(
            config or DriftConfig(alpha=SERVING_ALPHA), metadata=False
        )
        self.preprocessing = _fingerprint_text(preprocessing)
        self.unserved = _check_names(unserved)
        self.source, self.batch_size, self.max_pending = source, batch_size, max_pending
        self.profile_config = profile_config
        self.run = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
        self._warn_preprocessing()
        self.spool_fsync = bool(spool_fsync)
        self._open_spool(spool)
        self._start_threads()

    @staticmethod
    def _check_args(window, interval, batch_size, max_pending, source, config) -> None:
        if window is None and interval is None:
            raise ValueError("give window (samples), interval (seconds) or both; both are None")
        if window is not None:
            _check_positive("window", window, int)
        if interval is not None:
            _check_positive("interval", interval, (int, float))
        _check_positive("batch_size", batch_size, int)
        _check_positive("max_pending", max_pending, int)
        if not isinstance(source, str) or not source:
            raise ValueError(f"source must be a non-empty str, got {source!r}")
        if config is not None and not isinstance(config, DriftConfig):
            raise ValueError(f"config must be a DriftConfig, got {config!r}")

    def _warn_preprocessing(self) -> None:
        known = self.reference.meta.get("preprocessing")
        if self.preprocessing is None or not isinstance(known, list) or not known:
            return
        if self.preprocessing not in known:
            warnings.warn(
                f"serving preprocessing {self.preprocessing!r} is not the preprocessing of "
                f"reference {self.reference_name!r} ({', '.join(map(repr, known))}): features "
                "may differ from training because of it; windows are labelled with it",
                PreprocessingWarning,
                stacklevel=3,
            )

    def _open_spool(self, spool: str | os.PathLike | bool | None) -> None:
        """The run's write-ahead spool folder (``serving_spool``), or none with ``spool=False``."""
        self._spool_header = {
            "run": self.run,
            "store": redact(self.store.url),
            "reference": self.reference_name,
            "source": self.source,
            "fingerprint": self.featurizer.fingerprint,
            "preprocessing": self.preprocessing,
        }
        if spool is False:
            self.spool_root, self._spool = None, None
            return
        if spool is None or spool is True:
            root = default_root(self.store.url, self.reference_name, self.source)
        elif isinstance(spool, (str, os.PathLike)):
            root = Path(spool)
        else:
            raise ValueError(f"spool must be a folder, True, False or None, got {spool!r}")
        self.spool_root = root
        self._spool = RunSpool.create(root, self.run, self._spool_header)

    def _start_threads(self) -> None:
        self._lock = threading.Lock()  # the open window, the chunk and the pending count
        self._rows_lock = threading.Lock()  # rows and callbacks
        self._open = _OpenWindow(0)
        self._chunk: list[Mapping[str, Any]] = []
        self._pending = 0
        self._closed = False
        self._warned: set[str] = set()
        self._rows: list[Row] = []
        self._callbacks: list[DriftCallback] = []
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._recovery_asked = self._spool is None  # nothing to recover without a spool
        self._writes: queue.Queue = queue.Queue(maxsize=WRITE_BACKLOG)
        self._worker = _Worker(self)
        self._writer = threading.Thread(
            target=write_loop, args=(self._writes,), name="driftloader-serving-store", daemon=True
        )
        self._worker.thread.start()
        self._writer.start()
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)
        ended = weakref.finalize(self, self._inbox.put, ("stop", None))  # dropped unclosed
        ended.atexit = False  # at exit, _close_at_exit stores the open window first

    # -- the caller's side ---------------------------------------------------------------------

    def observe(self, samples: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Add one sample (a dict) or a list of samples. Never waits on storage."""
        if type(samples) is dict or isinstance(samples, Mapping):
            samples = (samples,)
        elif not isinstance(samples, (list, tuple)):
            raise TypeError(
                f"observe takes a sample dict or a list of them, got {type(samples).__name__}"
            )
        else:
            for sample in samples:
                if not isinstance(sample, Mapping):
                    raise TypeError(f"each sample must be a dict, got {type(sample).__name__}")
        wall, now = time.time(), time.monotonic()
        with self._lock:
            if self._closed:
                raise RuntimeError("this ServingMonitor is closed; observe needs an open one")
            self._take(samples, wall, now)

    def _take(self, samples: Sequence[Mapping[str, Any]], wall: float, now: float) -> None:
        win = self._open
        if (  # the common case, one sample in the middle of a window and a batch: append
            len(samples) == 1
            and win.n
            and (win.deadline is None or now < win.deadline)
            and (self.window is None or win.n + 1 < self.window)
            and len(self._chunk) + 1 < self.batch_size
        ):
            self._chunk.append(samples[0])
            win.n += 1
            win.end = wall
            return
        if not self._recovery_asked:
            self._ask_recovery()
        if win.deadline is not None and now >= win.deadline:
            win = self._close_window()
        i, total = 0, len(samples)
        while i < total:
            if win.n == 0:
                win.start = wall
                win.deadline = None if self.interval is None else now + self.interval
            room = total - i if self.window is None else min(total - i, self.window - win.n)
            if room == total:
                self._chunk.extend(samples)
            else:
                self._chunk.extend(samples[i : i + room])
            win.n += room
            win.end = wall
            i += room
            if len(self._chunk) >= self.batch_size:
                self._send_chunk()
            if self.window is not None and win.n >= self.window:
                win = self._close_window()

    def _send_chunk(self) -> None:
        chunk, self._chunk = self._chunk, []
        if len(chunk) <= self.batch_size:
            self._send(chunk)
            return
        for i in range(0, len(chunk), self.batch_size):
            self._send(chunk[i : i + self.batch_size])

    def _send(self, chunk: list[Mapping[str, Any]]) -> None:
        if not chunk:
            return
        if self._pending + len(chunk) > self.max_pending:
            self._open.dropped += len(chunk)
            self._warn_once(
                "dropped",
                f"ServingMonitor: more than {self.max_pending} samples wait to be featurized; "
                "dropping new ones (counted in each window's 'dropped'); raise max_pending or "
                "observe fewer samples",
            )
            return
        self._pending += len(chunk)
        self._inbox.put(("chunk", (self.run, self._open.index), chunk))
        self._spooled("append", self._open.index, chunk)

    def _spooled(self, method: str, *args: Any) -> Any:
        """``spool.method(*args)``; on a disk error, warn once and stop spooling."""
        if self._spool is None:
            return None
        try:
            return getattr(self._spool, method)(*args)
        except OSError as e:
            self._warn_once(
                "spool",
                f"ServingMonitor: cannot write to the spool {self.spool_root} ({e!r}); closed "
                "windows are no longer kept on disk until stored",
            )
            self._spool = None
            return None

    def _close_window(self) -> _OpenWindow:
        """Send the open window to be compared and stored; returns the new open window."""
        self._send_chunk()
        win = self._open
        if win.n:
            end = {"start": win.start, "end": win.end, "observed": win.n, "dropped": win.dropped}
            sealed = self._spooled("seal", win.index, end, self.spool_fsync)
            self._inbox.put(("close", (self.run, win.index), end, self.preprocessing, sealed))
            self._open = _OpenWindow(win.index + 1)
        else:
            win.deadline = None
        return self._open

    def _ask_recovery(self) -> None:
        """Have the worker take the windows crashed runs left in the spool (under the lock)."""
        self._recovery_asked = True
        if self._spool is not None:
            self._inbox.put(("recover",))

    def _rotate_if_due(self) -> None:
        """Close the open window if its interval has passed (called from the worker's tick)."""
        with self._lock:
            deadline = self._open.deadline
            if not self._closed and deadline is not None and time.monotonic() >= deadline:
                self._close_window()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, MonitorWarning, stacklevel=4)

    # -- results -------------------------------------------------------------------------------

    def on_drift(self, callback: DriftCallback) -> DriftCallback:
        """Call ``callback(row)`` once for every drifted window (from the monitor's thread;
        keep it short). Returns ``callback``, so it works as a decorator."""
        if not callable(callback):
            raise ValueError(f"on_drift needs a callable, got {callback!r}")
        with self._rows_lock:
            self._callbacks.append(callback)
        return callback

    def report(self) -> list[Row]:
        """One flat row per compared window, in order: ``window``, ``start``, ``end`` (unix
        seconds), ``n`` (samples profiled), ``observed``, ``dropped``, ``errors``, ``drifted``,
        ``score``, ``top`` (drifted features, highest score first), ``preprocessing``,
        ``stored``, ``url`` (the window's key in the store), ``run``."""
        with self._rows_lock:
            return [dict(row, top=list(row["top"])) for row in self._rows]

    def flush(self, timeout: float | None = None) -> bool:
        """Close the open window now and wait until every window so far is compared and
        stored. False if ``timeout`` seconds passed first."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                return True
            if not self._recovery_asked:
                self._ask_recovery()
            self._close_window()
            self._inbox.put(("flush", done))
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Close the open window, compare and store everything, stop the threads (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._recovery_asked:
                self._ask_recovery()
            self._close_window()
            self._inbox.put(("stop", None))
        atexit.unregister(self._at_exit)
        self._worker.thread.join(timeout)
        self._writer.join(timeout)
        if self._spool is not None and not self._writer.is_alive():
            self._spool.release()  # windows not stored stay in it for the next monitor

    def recover(self, timeout: float | None = None) -> list[Row]:
        """Compare and store the closed windows that crashed monitors of this store, reference
        and source left in the spool, and wait until they are stored; returns the rows of every
        window recovered so far (``recovered`` True). Also done in the background at the first
        ``observe``, ``flush`` or ``close``."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                raise RuntimeError("this ServingMonitor is closed; recover needs an open one")
            self._ask_recovery()
            self._inbox.put(("flush", done))
        done.wait(timeout)
        with self._rows_lock:
            return [dict(r, top=list(r["top"])) for r in self._rows if r.get("recovered")]

    def __enter__(self) -> ServingMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ServingMonitor({redact(self.store.url)!r}, reference={self.reference_name!r}, "
            f"window={self.window}, interval={self.interval}, windows={len(self._rows)})"
        )

    # -- called from the worker ----------------------------------------------------------------

    def _done_with(self, k: int) -> None:
        with self._lock:
            self._pending -= k

    def _publish(self, row: Row) -> None:
        with self._rows_lock:
            self._rows.append(row)
            callbacks = list(self._callbacks) if row["drifted"] else []
        for callback in callbacks:
            try:
                callback(dict(row, top=list(row["top"])))
            except Exception as e:  # a user's callback must not stop the monitor
                warnings.warn(f"on_drift callback {callback!r} failed: {e!r}", MonitorWarning, 2)

    def _set_stored(self, row: Row, error: str | None) -> None:
        with self._rows_lock:
            row["stored"] = error is None
            if error is not None:
                row["error"] = error


def _close_at_exit(ref: weakref.ref) -> None:
    monitor = ref()
    if monitor is not None:
        monitor.close(timeout=30.0)


class _Worker:
    """The featurizing thread: chunks -> the window's profile; a closed window -> compare, row,
    callbacks, then a write job for the storing thread."""

    def __init__(self, monitor: ServingMonitor) -> None:
        self.monitor = weakref.proxy(monitor)
        self.inbox, self.writes = monitor._inbox, monitor._writes
        self.tick = None if monitor.interval is None else min(monitor.interval / 4, 1.0)
        self.building: dict[tuple, tuple[Profile, int]] = {}  # (run, window) -> profile, errors
        self.thread = threading.Thread(target=self.run, name="driftloader-serving", daemon=True)

    def run(self) -> None:
        while True:
            try:
                message = self.inbox.get(timeout=self.tick)
            except queue.Empty:
                self._call(self.monitor._rotate_if_due)
                continue
            except ReferenceError:
                return
            if message[0] == "stop":
                self.writes.put(None)
                return
            self._call(self._handle, message)

    def _call(self, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except ReferenceError:  # the monitor was garbage-collected: nothing to report to
            pass
        except Exception as e:  # never let the thread die: say what failed and go on
            warnings.warn(f"ServingMonitor background error: {e!r}", MonitorWarning, 2)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "chunk":
            try:
                self._featurize(message[1], message[2])
            finally:
                self.monitor._done_with(len(message[2]))
        elif kind == "close":
            self._finish(*message[1:])
        elif kind == "recover":
            self._recover()
        elif kind == "flush":
            done = threading.Event()
            self.writes.put(done.set)  # the writer sets it once earlier writes are done
            done.wait()
            message[1].set()

    def _profile(self, key: tuple[str, int]) -> tuple[Profile, int]:
        if key not in self.building:
            m = self.monitor
            profile = Profile(
                m.featurizer.fingerprint,
                url=f"serving://{key[0]}/window-{key[1]:06d}",
                source=m.source,
                config=m.profile_config,
            )
            self.building[key] = (profile, 0)
        return self.building[key]

    def _featurize(self, key: tuple[str, int], samples: list[Mapping[str, Any]]) -> None:
        m = self.monitor
        profile, errors = self._profile(key)
        rows = [as_shard_sample(s, m._npy_bytes) for s in samples]
        before = int(getattr(m.featurizer, "errors", 0) or 0)
        try:
            profile.update(m.featurizer(rows), n_samples=len(rows))
        except Exception as e:  # a user featurizer failing on a request: counted, not fatal
            m._warn_once("featurize", f"ServingMonitor: featurizing failed: {e}; counted")
            errors += self._one_by_one(profile, rows)
        errors += int(getattr(m.featurizer, "errors", 0) or 0) - before
        self.building[key] = (profile, errors)

    def _one_by_one(self, profile: Profile, rows: list[dict[str, Any]]) -> int:
        """Featurize ``rows`` one at a time after a batch failed; returns how many failed."""
        failed = 0
        for row in rows:
            try:
                batch = self.monitor.featurizer([row])
            except Exception:
                failed += 1
                continue
            profile.update(batch, n_samples=1)
        return failed

    def _finish(
        self,
        key: tuple[str, int],
        end: Mapping[str, Any],
        preprocessing: str | None,
        spooled: SealedWindow | None,
        recovered: bool = False,
    ) -> None:
        """Compare the closed window ``key``, publish its row, and queue it to be stored (then
        marked stored in the spool, ``spooled.done()``)."""
        m = self.monitor
        profile, errors = self.building.pop(key, None) or self._profile(key)
        self.building.pop(key, None)
        profile.count_errors(errors)
        profile.created = end["end"]
        if preprocessing is not None:
            profile.meta["metadata"] = {"preprocessing": preprocessing}
        profile.meta["serving"] = {
            "run": key[0],
            "window": key[1],
            "start": end["start"],
            "end": end["end"],
            "reference": m.reference_name,
            "observed": end["observed"],
            "dropped": end["dropped"],
        }
        result = None
        if profile.n:
            result = without_unserved(compare(profile, m.reference, m.config), m.unserved)
        row = window_row(profile, result, preprocessing)
        if recovered:
            row["recovered"] = True
        m._publish(row)
        if result is not None:
            job = (m.store, profile, result, m.reference_name, row, m._set_stored, spooled)
            self.writes.put(job)
        elif spooled is not None:  # nothing could be featurized: retrying would not help
            spooled.done()

    def _recover(self) -> None:
        """Take the run folders of dead monitors in the spool and finish their closed windows
        (featurized from the log, compared, published, queued to be stored)."""
        m = self.monitor
        for folder in orphaned_runs(m.spool_root, exclude=m.run):
            spool = RunSpool.take(folder)
            if spool is None:  # a live monitor's, or being recovered by another one
                continue
            windows, lost, unreadable = spool.recoverable()
            for problem in unreadable:
                m._warn_once(problem, f"ServingMonitor: cannot recover {problem}; left there")
            if lost:
                m._warn_once(
                    f"lost {folder}",
                    f"ServingMonitor: run {folder.name} ended with an open window of {lost} "
                    "samples, lost (only closed windows are kept until stored)",
                )
            for window in windows:
                self._recover_window(window)
            self.writes.put(spool.release)  # once the writer has stored its windows

    def _recover_window(self, spooled: SpooledWindow) -> None:
        m = self.monitor
        header = spooled.header
        mine = {k: v for k, v in m._spool_header.items() if k not in ("run", "preprocessing")}
        if any(header.get(k) != v for k, v in mine.items()):
            m._warn_once(
                str(spooled.sealed.segment),
                f"ServingMonitor: {spooled.sealed.segment} holds windows of another store, "
                "reference, source or featurizer; left there",
            )
            return
        key = (header["run"], spooled.window)
        for chunk in spooled.chunks:
            self._featurize(key, chunk)
        self._finish(key, spooled.end, header.get("preprocessing"), spooled.sealed, True)
