"""Shards on a filesystem that only fsspec knows (GCS, Azure, ...: ``FsspecFetcher``) or read
through a user's ``opener``, named without their sizes: the size is asked for beside the first
block (or read from the opened file), so the next blocks go out together instead of one at a
time until one comes back short."""

from __future__ import annotations

import contextlib
import io
import threading
import time

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

import driftloader as dl
from driftloader.reader import ReadOptions

from .conftest import write_shard

BLOCK = 16 * 1024


@contextlib.contextmanager
def _slow_read(cls):
    """30 ms of a read, counted in ``cls.reading`` (and ``cls.most``, the most at once)."""
    with cls.lock:
        cls.reading += 1
        cls.most = max(cls.most, cls.reading)
    try:
        time.sleep(0.03)
        yield
    finally:
        with cls.lock:
            cls.reading -= 1


class SlowMemory(MemoryFileSystem):
    """fsspec's memory filesystem, each ranged read 30 ms long, counting reads at once."""

    protocol = "slowmem"
    store: dict = {}
    pseudo_dirs = [""]
    lock = threading.Lock()
    reading = 0
    most = 0
    sized = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("slowmem://", "memory://", 1))

    def cat_file(self, path, start=None, end=None, **kwargs):
        with _slow_read(type(self)):
            return super().cat_file(path, start=start, end=end, **kwargs)

    def size(self, path):
        type(self).sized += 1
        return super().size(path)


def test_a_shard_of_unknown_size_has_its_blocks_read_together(tmp_path):
    fsspec.register_implementation("slowmem", SlowMemory, clobber=True)
    local = tmp_path / "a.tar"
    samples = write_shard(local, 40, seed=1)
    fs = SlowMemory()
    fs.pipe("/shards/a.tar", local.read_bytes())
    assert local.stat().st_size > 6 * BLOCK  # several blocks
    read = ReadOptions(block_size=BLOCK, max_requests=8, max_inflight=8 * BLOCK)
    ds = dl.DriftDataset(["slowmem://shards/a.tar"], shuffle=False, read_options=read)
    SlowMemory.most = SlowMemory.sized = 0
    keys = [s["__key__"] for s in ds]
    assert keys == [s["__key__"] for s in samples]
    assert SlowMemory.most >= 3  # was 1: one block after the other (0.80 s here, now 0.13 s)
    assert SlowMemory.sized == 1  # one size asked for


class SlowFile(io.BytesIO):
    """An opened shard whose reads take 30 ms each, counting reads at once (no ``size``, no
    descriptor: its size is where a seek to its end lands)."""

    lock = threading.Lock()
    reading = 0
    most = 0

    def read(self, size=-1):
        with _slow_read(type(self)):
            return super().read(size)


def test_a_shard_read_through_an_opener_has_its_blocks_read_together(tmp_path):
    local = tmp_path / "a.tar"
    samples = write_shard(local, 40, seed=2)
    data = local.read_bytes()
    assert len(data) > 6 * BLOCK
    opened = []

    def opener(path, mode="rb", **kwargs):
        opened.append(path)
        return SlowFile(data)

    read = ReadOptions(block_size=BLOCK, max_requests=8, max_inflight=8 * BLOCK, opener=opener)
    ds = dl.DriftDataset(["custom://bucket/a.tar"], shuffle=False, read_options=read)
    SlowFile.most = 0
    keys = [s["__key__"] for s in ds]
    assert keys == [s["__key__"] for s in samples]
    assert len(opened) > 6  # one open per block
    assert SlowFile.most >= 3  # was 1: the size was not known until a block came back short
