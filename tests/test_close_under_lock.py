"""An iterator abandoned mid-pass is finalized wherever the garbage collector runs: in CPython
<= 3.12 that can be inside a thread's start or stop, with ``threading``'s shutdown-locks lock
held. Closing the read then must not join a thread (the join takes that lock: a hang, seen
once in CI)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from .conftest import write_shard

SCRIPT = """
import sys, threading
import fsspec
import driftloader as dl

path = sys.argv[1]
with open(path, "rb") as f:
    fsspec.filesystem("memory").pipe("/closing/a.tar", f.read())
for url in (path, "memory://closing/a.tar"):
    it = iter(dl.DriftDataset(url, shuffle=False))
    next(it)
    with threading._shutdown_locks_lock:  # held where a GC pass finalized one in CI
        del it
    print("closed", url, flush=True)
"""


@pytest.mark.skipif(
    not hasattr(threading, "_shutdown_locks_lock"), reason="CPython <= 3.12 threading only"
)
def test_a_pass_abandoned_mid_shard_closes_without_joining_a_thread(tmp_path):
    write_shard(tmp_path / "a.tar", 50)
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "a.tar")],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"closing an abandoned pass hung; it printed: {e.stdout!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("closed") == 2
