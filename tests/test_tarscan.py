"""The tar walk's vectorised scan: the runs of common headers it takes whole, and the loop
that takes over at anything else, together read exactly what tarfile reads."""

from __future__ import annotations

import io
import random
import tarfile

import pytest
import webdataset as wds

from driftloader import tarparse
from driftloader.errors import ShardReadError
from driftloader.tarparse import TarMembers

from .conftest import write_shard
from .test_reader import _respelled


def _member(tar: tarfile.TarFile, name: str, data: bytes, **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), fields.pop("mtime", 1_700_000_000)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def _nested_tar(seed: int) -> bytes:
    """A whole tar archive, to be stored as a member: valid ustar headers inside its data."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(3):
            _member(tar, f"inner{seed}_{i}.txt", bytes([65 + i]) * (300 + i))
    return buf.getvalue()


def _mixed_archive(fmt: int, seed: int, samples: int) -> bytes:
    """Mostly common members, with every kind the scan must leave to the loop among them."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i in range(samples):
            key = f"s{i:05d}"
            roll = rng.random()
            if roll < 0.03 and fmt != tarfile.USTAR_FORMAT:
                key = f"long/{'n' * 150}{i}"  # a pax path or a GNU long name
            elif roll < 0.06:
                key = f"{'d' * 120}/s{i}"  # the ustar prefix field
            elif roll < 0.08:
                key = f"ünï/s{i}"  # UTF-8 names
            elif roll < 0.09:
                key = f"r\udce2\udc82{i}"  # bytes that are not UTF-8 (E2 82, cut short)
            size = rng.choice([0, 1, 37, 511, 512, 513, 2000, 5000])
            _member(tar, f"{key}.bin", rng.randbytes(size), mtime=1_700_000_000.25 + i)
            if 0.08 <= roll < 0.09:  # and a name that ends in them
                _member(tar, f"{key}.t\udce2\udc82", b"x")
            if roll > 0.97:
                _member(tar, f"{key}.tar", _nested_tar(i))
            if 0.95 < roll <= 0.97 and fmt == tarfile.PAX_FORMAT:
                # a pax size record: it, not the header's field, gives the member's size
                _member(tar, f"{key}.txt", b"sized", pax_headers={"size": "5"})
            if 0.93 < roll <= 0.95:
                _member(tar, f"{key}.dir", b"", type=tarfile.DIRTYPE)
                _member(tar, f"{key}.lnk", b"", type=tarfile.SYMTYPE, linkname="x")
            _member(tar, f"{key}.cls", str(i % 10).encode())
    return buf.getvalue()


def _expected(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def _ours(data: bytes, chunk: int) -> list[tuple[str, bytes]]:
    blocks = iter([data[i : i + chunk] for i in range(0, len(data), chunk)])
    return [(name, value) for name, value, _ in TarMembers(blocks, "mixed.tar")]


@pytest.mark.parametrize("scan_rows", [16, 8192], ids=["short-scans", "default-scans"])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("seed", [1, 2])
def test_mixed_archives_read_as_tarfile_reads_them(fmt, seed, scan_rows, monkeypatch):
    monkeypatch.setattr(tarparse, "_SCAN_ROWS", scan_rows)
    data = _mixed_archive(fmt, seed, 400)
    expected = _expected(data)
    # every 7th header respelled: one the scan leaves to the loop, mid-run
    for variant in (data, _respelled(data, 7)):
        for chunk in (len(variant), 4096, 7000, 65_536 + 512):
            assert _ours(variant, chunk) == expected, chunk


def test_a_webdataset_shard_is_scanned_whole():
    """The common case takes no header through the loop: one scan finds every member."""
    buf = io.BytesIO()
    with wds.TarWriter(buf) as sink:
        for i in range(200):
            sink.write({"__key__": f"k{i:04d}", "bin": bytes(i), "cls": b"%d" % (i % 10)})
    data = buf.getvalue()
    members, end, _ = tarparse._scan(data, 0, 0, tarparse.DEFAULT_MAX_MEMBER_SIZE)
    assert [(n, v) for n, v, _ in members] == _expected(data)
    assert data[end:] == bytes(len(data) - end)  # stopped at the end-of-archive blocks
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [offset for _, _, offset in members] == [m.offset_data - 512 for m in tar]


def test_a_member_data_never_passes_for_headers():
    """A member holding a tar archive has valid headers inside its data: the chain of real
    headers steps over them."""
    inner = _nested_tar(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(20):
            _member(tar, f"s{i}.tar", inner)
            _member(tar, f"s{i}.cls", b"1")
    data = buf.getvalue()
    assert [name for name, _ in _ours(data, len(data))] == [
        f"s{i}.{ext}" for i in range(20) for ext in ("tar", "cls")
    ]


@pytest.mark.parametrize("field", ["name", "size"])
def test_a_corrupt_header_deep_in_a_shard_is_named_at_its_byte(tmp_path, field):
    path = tmp_path / "deep.tar"
    write_shard(path, 300)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        header = next(m.offset for m in tar if m.name.startswith("sample000250."))
    # the first header of sample000250 (its pax header): a bit of the name or of the size
    data[header + (3 if field == "name" else 130)] ^= 0x01  # only the checksum can tell
    path.write_bytes(bytes(data))
    members = TarMembers(iter([bytes(data)]), "deep.tar")
    names = []
    with pytest.raises(ShardReadError, match=rf"deep\.tar at byte {header}: corrupt tar header"):
        for name, _, _ in members:
            names.append(name)
    assert names[-1].startswith("sample000249.") and len(names) == 250 * 5


def test_a_member_over_the_limit_deep_in_a_shard_is_refused(tmp_path):
    path = tmp_path / "big.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(100):
            sink.write({"__key__": f"k{i:03d}", "bin": bytes(5000 if i == 70 else 10)})
    with tarfile.open(path) as tar:
        header = next(m.offset_data - 512 for m in tar if m.name == "k070.bin")
    members = TarMembers(iter([path.read_bytes()]), "big.tar", max_member_size=1000)
    with pytest.raises(ShardReadError, match=rf"big\.tar at byte {header}: member is 5000"):
        list(members)
