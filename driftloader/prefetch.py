"""Stored profiles read ahead of the gate's verdicts, for the next shards of a pass at once.

A shard with no decision in the index is decided from its stored profile (``ShardGate.verdict``):
one GET, made when the reader's lookahead reaches the shard, in the reader's thread. On the first
gated pass after a reference is built, on S3 at 40 ms, that was a round trip per shard, one
after the other, on the sample path. ``ProfilesAhead`` reads those profiles for the next shards
of the pass on background threads (``shardstream`` says which); the verdict takes the result
when it gets to the shard. A read may have CPU work to follow it (``then``: the comparison of
the profile with the reference, ~30 ms for 64 features): that runs on one thread of its own,
in the order the reads were started, so the reader, idle while it waits for bytes at real
latency, does not do it on the sample path, and the first shard's waits behind no other's.
Only reads and comparisons are made here: every decision is still taken and recorded by the
gate, in the reader's thread. The gate also starts here, when it is made, the reads its
reference's name tells (``gate_reads.start_reads``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

THREADS = 8  # profile reads in flight at once
WINDOW = 16  # shards ahead of the reader whose profiles are read


class ProfilesAhead:
    """Reads started ahead by key, each taken once (``take``) or dropped with ``clear``."""

    def __init__(self, threads: int = THREADS) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._after: ThreadPoolExecutor | None = None  # what follows the reads, in order
        self._pid = os.getpid()
        self._started: dict[Hashable, Future] = {}

    def start(
        self, key: Hashable, read: Callable[[], Any], then: Callable[[Any], Any] | None = None
    ) -> None:
        """Run ``read()`` on a background thread unless it was started for ``key`` already;
        with ``then``, ``then(read())`` is what ``take`` gives, run after the read on the one
        thread that runs the ``then`` of every read, in the order started. A read may start
        another (the gate's profile read starts the sidecar's when there is no profile)."""
        self._own()
        if key not in self._started:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.threads, thread_name_prefix="driftloader-ahead"
                )
            future = self._pool.submit(read)
            if then is not None:
                if self._after is None:
                    self._after = ThreadPoolExecutor(1, thread_name_prefix="driftloader-ahead")
                future = self._after.submit(_after, then, future)
            self._started[key] = future

    def take(self, key: Hashable, read: Callable[[], Any]) -> Any:
        """What the read started for ``key`` gives (its error raised here), else ``read()``."""
        self._own()
        future = self._started.pop(key, None)
        return read() if future is None else future.result()

    def discard(self, key: Hashable) -> None:
        """Forget the read started for ``key`` (its result is not needed)."""
        self._started.pop(key, None)

    def clear(self) -> None:
        """Forget the reads not taken (a pass ended early): their results are not waited for."""
        self._started.clear()

    def _own(self) -> None:
        """A forked DataLoader worker inherits this object but not its threads: start afresh."""
        if self._pid != os.getpid():
            self._pool, self._after, self._pid, self._started = None, None, os.getpid(), {}

    def __getstate__(self) -> dict:
        return {"threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["threads"])


def _after(then: Callable[[Any], Any], read: Future) -> Any:
    return then(read.result())
