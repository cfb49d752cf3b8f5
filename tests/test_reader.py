"""The tar reader: equality with webdataset, corruption, truncation, retries, limits."""

from __future__ import annotations

import io
import tarfile

import pytest
import webdataset as wds

import driftloader as dl
from driftloader.errors import ShardReadError
from driftloader.reader import ReadStats, is_transient, read_shard
from driftloader.sources import Shard
from driftloader.tarparse import TarMembers

from .conftest import write_shard


def test_samples_equal_webdataset(local_shards):
    """Whole samples, ``__local_path__`` of local files included (as webdataset gives it)."""
    ours = [s for url in local_shards for s in read_shard(url)]
    theirs = list(wds.WebDataset(local_shards, shardshuffle=False))
    assert ours == theirs and len(ours) == 100
    assert ours[0]["__local_path__"] == local_shards[0]


def test_small_blocks_and_members_larger_than_a_block(tmp_path):
    path = tmp_path / "big.tar"
    samples = [
        {"__key__": f"k{i}", "bin": bytes([i]) * (10_000 + i), "cls": b"1"} for i in range(5)
    ]
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    ours = list(read_shard(str(path), block_size=4096))
    assert [s["bin"] for s in ours] == [s["bin"] for s in samples]


def test_long_names_and_directories(tmp_path):
    path = tmp_path / "long.tar"
    key = "d/" + "x" * 150
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for ext, data in (("txt", b"hello"), ("cls", b"3")):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (sample,) = read_shard(str(path))
    assert sample["__key__"] == key and sample["txt"] == b"hello" and sample["cls"] == b"3"


def _tar_bytes(fmt: int, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i, name in enumerate(names):
            data = bytes([i % 251]) * (i * 37 % 1500)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000.5  # a float mtime: a pax record
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("s0/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "s0/a.txt"
        tar.addfile(link)
    return buf.getvalue()


def _respelled(tar: bytes, every: int = 1) -> bytes:
    """The same archive with every ``every``-th header's numbers spelled as other writers do:
    the checksum in seven digits and a NUL, the size in twelve digits with no NUL."""
    out, at, n = bytearray(tar), 0, 0
    while at + 512 <= len(out) and any(out[at : at + 512]):
        header = out[at : at + 512]
        size = int(bytes(header[124:136]).split(b"\0")[0] or b"0", 8)
        if n % every == every - 1:
            header[124:136] = b"%012o" % size
            header[148:156] = b" " * 8
            header[148:156] = b"%07o\0" % sum(header)
            out[at : at + 512] = header
        at += 512 + size + (-size) % 512
        n += 1
    return bytes(out)


@pytest.mark.parametrize("respell", [False, True], ids=["as-written", "respelled"])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_equal_tarfile_in_every_format(fmt, respell):
    """Names in the ustar prefix, GNU long names and pax paths; numbers spelled either way;
    links passed over. What we read is what tarfile reads, byte for byte."""
    names = ["s0/a.txt", "s0/a.cls", f"{'d' * 120}/s1.txt", "s3.json"]  # s1: ustar prefix
    if fmt != tarfile.USTAR_FORMAT:
        names.insert(3, f"s2/{'n' * 140}.bin")  # a long name ustar cannot hold
    data = _tar_bytes(fmt, names)
    if respell:
        data = _respelled(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    for chunk in (len(data), 700):  # whole, and in blocks that cut headers and members
        blocks = iter([data[i : i + chunk] for i in range(0, len(data), chunk)])
        ours = [(name, value) for name, value, _ in TarMembers(blocks, "formats.tar")]
        assert ours == expected, chunk
    assert len(expected) == len(names)


def test_truncated_shard_names_url_and_offset(tmp_path):
    path = tmp_path / "t.tar"
    write_shard(path, 10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardReadError, match=r"t\.tar at byte \d+: truncated"):
        list(read_shard(str(path)))


@pytest.mark.parametrize(
    ("member", "whole"),
    # .bin is sample000001's first member: sample000000 before it is whole. A cut inside
    # sample000001's .cls leaves sample000001 incomplete: not yielded (sample000000 was).
    [("sample000001.bin", ["sample000000"]), ("sample000001.cls", ["sample000000"])],
    ids=["cut-in-the-next-sample", "cut-inside-the-sample"],
)
def test_a_sample_whole_before_a_truncation_is_kept(tmp_path, member, whole):
    path = tmp_path / "t.tar"
    write_shard(path, 3)
    with tarfile.open(path) as tar:
        data_at = {m.name: m.offset_data for m in tar.getmembers()}[member]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: data_at + 10])  # its headers whole, its data cut
    keys = []
    with pytest.raises(ShardReadError, match="truncated"):
        for sample in read_shard(str(cut)):
            keys.append(sample["__key__"])
    assert keys == whole


def test_corrupt_header_is_detected(tmp_path):
    path = tmp_path / "c.tar"
    write_shard(path, 4)
    data = bytearray(path.read_bytes())
    header = data.find(b"sample000001.")
    assert header > 0 and header % 512 == 0
    data[header + 3] ^= 0x01  # one bit of a member name: only the checksum can tell
    path.write_bytes(bytes(data))
    with pytest.raises(ShardReadError, match="checksum|corrupt"):
        list(read_shard(str(path)))


def test_empty_file_and_empty_archive(tmp_path):
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(ShardReadError, match="empty file"):
        list(read_shard(str(empty)))
    archive = tmp_path / "none.tar"
    with wds.TarWriter(str(archive)):
        pass
    assert list(read_shard(str(archive))) == []


def test_missing_shard(tmp_path):
    with pytest.raises(ShardReadError, match="does not exist"):
        list(read_shard(str(tmp_path / "nope.tar")))


def test_member_over_limit_is_refused_before_allocation(tmp_path):
    path = tmp_path / "m.tar"
    write_shard(path, 2)
    with pytest.raises(ShardReadError, match="over max_member_size=100"):
        list(read_shard(str(path), max_member_size=100))


def test_duplicate_member_in_sample(tmp_path):
    path = tmp_path / "dup.tar"
    with tarfile.open(path, "w") as tar:
        for _ in range(2):
            info = tarfile.TarInfo("k.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"a"))
    with pytest.raises(ShardReadError, match="duplicate"):
        list(read_shard(str(path)))


class FlakyFile:
    """Wraps a real file object and resets the connection once after ``fail_at`` bytes."""

    failures_left = 1

    def __init__(self, inner, fail_at: int):
        self.inner, self.fail_at = inner, fail_at

    def read(self, n: int) -> bytes:
        pos = self.inner.tell()
        if FlakyFile.failures_left and pos + n > self.fail_at:
            if pos < self.fail_at:
                return self.inner.read(self.fail_at - pos)
            FlakyFile.failures_left -= 1
            raise ConnectionResetError("connection reset by peer (injected)")
        return self.inner.read(n)

    def seek(self, offset: int) -> None:
        self.inner.seek(offset)

    def close(self) -> None:
        self.inner.close()


def _flaky_opener(fs, fail_at: int, opened: list):
    def opener(path, mode="rb", **kwargs):
        opened.append(kwargs)
        return FlakyFile(fs.open(path, mode, **kwargs), fail_at)

    return opener


def test_transient_failure_on_s3_resumes_at_the_byte(s3_bucket, s3fs_fresh, tmp_path):
    local = tmp_path / "s.tar"
    expected = write_shard(local, 60, seed=3)
    s3fs_fresh.put(str(local), f"{s3_bucket}/s.tar")
    FlakyFile.failures_left = 1
    opened: list = []
    stats = ReadStats()
    from driftloader.sources import filesystem

    fs = filesystem(f"s3://{s3_bucket}/s.tar")
    samples = list(
        read_shard(
            Shard(f"s3://{s3_bucket}/s.tar"),
            block_size=8192,
            backoff=0.01,
            stats=stats,
            opener=_flaky_opener(fs, 20_000, opened),
        )
    )
    assert [s["__key__"] for s in samples] == [s["__key__"] for s in expected]
    assert [s["bin"] for s in samples] == [s["bin"] for s in expected]
    blocks = -(-local.stat().st_size // 8192)
    assert stats.retries == 1 and len(opened) <= blocks + 1  # one open per block, one retry
    assert stats.bytes <= local.stat().st_size  # resumed at the byte: nothing read twice


def test_retries_are_bounded(tmp_path):
    path = tmp_path / "r.tar"
    write_shard(path, 5)

    def always_failing(p, mode="rb", **kwargs):
        raise TimeoutError("timed out (injected)")

    with pytest.raises(ShardReadError, match="read failed"):
        list(read_shard(str(path), retries=2, backoff=0.001, opener=always_failing))


def test_transient_classification():
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert not is_transient(FileNotFoundError())
    slow = Exception()
    slow.response = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
    assert is_transient(slow)
    denied = Exception()
    denied.response = {
        "Error": {"Code": "AccessDenied"},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    assert not is_transient(denied)


def test_an_unknown_protocol_names_the_url():
    with pytest.raises(ValueError, match=r"cannot open s4://bucket/x\.tar: Protocol not known"):
        list(dl.DriftDataset("s4://bucket/x.tar"))


def _gzip(path, out, name="g.tar.gz"):
    import gzip

    target = out / name
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


@pytest.mark.parametrize("name", ["g.tgz", "g.tar.gz", "g.tar"])  # .tar: gzip by magic bytes
def test_gzip_shards_read_as_webdataset_does(tmp_path, name):
    plain = tmp_path / "p.tar"
    write_shard(plain, 30)
    packed = _gzip(plain, tmp_path, name)
    ours = list(read_shard(str(packed), block_size=4096))  # many blocks, many inflate calls
    theirs = list(wds.WebDataset(str(packed), shardshuffle=False))
    assert ours == theirs and len(ours) == 30


def test_truncated_and_corrupt_gzip_name_the_shard(tmp_path):
    plain = tmp_path / "p.tar"
    write_shard(plain, 30)
    packed = _gzip(plain, tmp_path)
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardReadError, match=r"g\.tar\.gz.*truncated"):
        list(read_shard(str(packed)))
    packed.write_bytes(data[:20] + bytes(200) + data[220:])
    with pytest.raises(ShardReadError, match=r"g\.tar\.gz at byte \d+: corrupt"):
        list(read_shard(str(packed)))


def test_other_compressions_are_refused_naming_them(tmp_path):
    import bz2
    import lzma

    plain = tmp_path / "p.tar"
    write_shard(plain, 3)
    for name, pack, compression in (
        ("b.tar.bz2", bz2.compress, "bzip2"),
        ("x.tar.xz", lzma.compress, "xz"),
    ):
        (tmp_path / name).write_bytes(pack(plain.read_bytes()))
        with pytest.raises(ShardReadError, match=f"{compression}-compressed"):
            list(read_shard(str(tmp_path / name)))


def test_pipe_urls_read_the_command_output_as_webdataset_does(tmp_path):
    path = tmp_path / "p.tar"
    write_shard(path, 7)
    url = f"pipe:cat {path}"
    ours = list(dl.DriftDataset(url))
    theirs = list(wds.WebDataset(url, shardshuffle=False))
    assert ours == theirs and len(ours) == 7 and "__local_path__" not in ours[0]


def test_a_failing_pipe_command_is_an_error_naming_it(tmp_path):
    with pytest.raises(
        ShardReadError, match=r"pipe:cat /nonexistent/x\.tar: the command exited with status 1"
    ):
        list(read_shard("pipe:cat /nonexistent/x.tar"))


@pytest.mark.parametrize(
    "records", [b"14 size=abc\n", b"10 path=a\n6 abc\n", b"99 path=a\n", b"xx path=a\n"]
)
def test_malformed_pax_headers_raise_shard_read_error(tmp_path, records):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        pax = tarfile.TarInfo("././@PaxHeader")
        pax.type, pax.size = tarfile.XHDTYPE, len(records)
        tar.addfile(pax, io.BytesIO(records))
        info = tarfile.TarInfo("k.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    with pytest.raises(ShardReadError, match=r"pax\.tar at byte 0: malformed pax header"):
        list(read_shard(str(path)))
