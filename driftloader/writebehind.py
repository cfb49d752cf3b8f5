"""Write-behind for the small store writes the gate makes while samples flow: a catalog row per
shard decided, written on background threads instead of between two samples.

Each row is a read and a write of one small object, two round trips: 80-100 ms per shard on
object storage with 40 ms latency, as long as reading a shard of a thousand small samples. The
gate hands them to a ``WriteBehind`` and goes on; ``flush`` (at the end of every pass, and when
the sample stream is closed early) waits for all of them and raises the first error, so a
failed write is never lost silently and a pass never ends with its rows unwritten. Writes of
one key keep their order; at most ``limit`` wait at once (the next ``submit`` waits for the
oldest), so memory stays bounded when the store is slower than the reading, and a finished
write is forgotten (a check over a million shards holds a few dozen, not a million).

Example::

    writes = WriteBehind()
    writes.submit(row.url, store.record, row)   # returns at once
    writes.flush()                              # every row written, or the first error raised
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

THREADS = 4  # writes of different keys in flight at once
RECORD_THREADS = 16  # for a batch command (check, validate): a catalog read and write a shard
LIMIT = 64  # writes waiting at most


class WriteBehind:
    """Runs ``fn(*args)`` calls on background threads, in order per key; see the module."""

    @classmethod
    def for_batch(cls) -> WriteBehind:
        """Sized for a batch command (check, validate): a catalog read and write a shard."""
        return cls(RECORD_THREADS, 4 * RECORD_THREADS)

    def __init__(self, threads: int = THREADS, limit: int = LIMIT) -> None:
        if threads < 1 or limit < 1:
            raise ValueError(f"threads and limit must be >= 1, got {threads} and {limit}")
        self.threads, self.limit = threads, limit
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._pending: deque[tuple[Hashable, Future]] = deque()
        self._last: dict[Hashable, Future] = {}

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after the earlier writes of ``key``; raises the error of an
        earlier write that failed (then nothing more is queued)."""
        self._own()
        self._reap()
        while len(self._pending) >= self.limit:
            self._pending[0][1].result()
            self._pop()
        before = self._last.get(key)
        future = self._executor().submit(_after, before, fn, args)
        self._pending.append((key, future))
        self._last[key] = future

    def flush(self) -> None:
        """Wait for every queued write; raise the first error among them."""
        self._own()
        first: BaseException | None = None
        while self._pending:
            error = self._pending[0][1].exception()  # waited for, then forgotten
            self._pop()
            first = first or error
        if first is not None:
            raise first

    def let_go(self) -> None:
        """Stop waiting for the queued writes: they finish on their own, and one that fails
        warns (nobody is left to raise it to). For a pass closed on a thread other than the
        one reading it: the garbage collector finalizes a pass left unfinished wherever it
        runs, fsspec's loop thread included, which the writes need to finish."""
        self._own()
        for _, future in self._pending:
            future.add_done_callback(_warn_if_failed)
        self._pending = deque()  # ``_last`` still orders the next write of a key after them

    @property
    def pending(self) -> int:
        """Writes queued and not finished yet."""
        return sum(not f.done() for _, f in self._pending)

    def _reap(self) -> None:
        """Drop finished writes from the queue, raising the first failure."""
        while self._pending and self._pending[0][1].done():
            self._pop().result()  # done: nothing to wait for

    def _pop(self) -> Future:
        """The oldest write, no longer queued; its key is forgotten if it was the last."""
        key, future = self._pending.popleft()
        if self._last.get(key) is future:
            del self._last[key]
        return future

    def _own(self) -> None:
        """In a forked DataLoader worker, which inherits this object but not its threads (nor
        the parent's queued writes, which the parent finishes): start afresh."""
        if self._pid != os.getpid():
            self._pool, self._pid = None, os.getpid()
            self._pending, self._last = deque(), {}

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="driftloader-write")
        return self._pool

    def __getstate__(self) -> dict:
        return {"threads": self.threads, "limit": self.limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["threads"], state["limit"])


def _warn_if_failed(future: Future) -> None:
    error = None if future.cancelled() else future.exception()
    if error is not None:
        warnings.warn(
            f"a store write of a pass closed before its end failed: {error}",
            RuntimeWarning,
            stacklevel=2,
        )


def _after(before: Future | None, fn: Callable[..., Any], args: tuple) -> Any:
    """``fn(*args)`` once ``before`` (the previous write of the same key) is done. ``before``
    was queued earlier, so it is running or finished when this starts: waiting cannot
    deadlock. Its failure is raised by ``flush``, not here."""
    if before is not None:
        before.exception()
    return fn(*args)


__all__ = ["LIMIT", "RECORD_THREADS", "THREADS", "WriteBehind"]
