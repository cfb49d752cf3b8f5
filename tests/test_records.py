"""Records as samples: decoded values made shard-shaped, JSON-lines and Parquet files profiled
and checked like tar shards (library and CLI), locally and on S3."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from driftloader.cli import main
from driftloader.errors import ShardReadError
from driftloader.features import DefaultFeaturizer, load_npy
from driftloader.profiling import profile_shard, profile_shards
from driftloader.records import as_shard_sample, as_shard_value, read_records, record_format
from driftloader.store import ProfileStore

N = 300


def rows(n: int, seed: int, shift: float = 0.0) -> list[dict]:
    """Decoded samples: a 4-vector and a label."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)) + shift
    return [{"x.npy": x[i].tolist(), "cls": int(rng.integers(0, 3))} for i in range(n)]


def npy(values) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values))
    return buf.getvalue()


def write_tar(path: Path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as sink:
        for i, s in enumerate(samples):
            sink.write({"__key__": f"s{i:05d}", "x.npy": npy(s["x.npy"]), "cls": str(s["cls"])})
    return str(path)


def write_jsonl(path: Path, samples: list[dict]) -> str:
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return str(path)


def write_parquet(path: Path, samples: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(samples), str(path))
    return str(path)


# -- conversion ------------------------------------------------------------------------------


def test_decoded_values_become_what_a_shard_holds():
    arr = np.arange(4, dtype=np.float32)
    assert as_shard_value("x.npy", arr) is arr
    assert np.array_equal(load_npy(as_shard_value("x.npy", arr, npy_bytes=True)), arr)
    assert np.array_equal(as_shard_value("x.npy", [1.0, 2.0]), [1.0, 2.0])
    assert as_shard_value("cls", 3) == "3" and as_shard_value("cls", np.int64(2)) == "2"
    assert json.loads(as_shard_value("meta.json", {"a": np.float32(1.5), "b": [1]})) == {
        "a": 1.5,
        "b": [1],
    }
    assert as_shard_value("age", 31) == "31"  # no known extension: text, as a shard holds it
    raw = b"\x00\x01"
    assert as_shard_value("blob.bin", raw) is raw


def test_images_are_encoded_in_the_fields_format():
    from PIL import Image

    img = Image.new("RGB", (20, 10), (200, 30, 30))
    png = as_shard_value("png", img)
    with Image.open(io.BytesIO(png)) as back:
        assert back.format == "PNG" and back.size == (20, 10)
    jpg = as_shard_value("jpg", np.full((8, 12, 3), 90, dtype=np.uint8))
    with Image.open(io.BytesIO(jpg)) as back:
        assert back.format == "JPEG" and back.size == (12, 8)
    assert as_shard_value("jpg", base64.b64encode(png).decode()) == png
    assert as_shard_value("jpg", "not base64!") == "not base64!"  # left for the featurizer


def test_decoded_and_encoded_samples_featurize_the_same():
    encoded = [{"x.npy": npy(r["x.npy"]), "cls": str(r["cls"]).encode()} for r in rows(20, 1)]
    decoded = [as_shard_sample(r) for r in rows(20, 1)]
    a, b = DefaultFeaturizer()(encoded), DefaultFeaturizer()(decoded)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].values.tolist() == b[name].values.tolist(), name


def test_unconvertible_values_are_counted_by_the_featurizer():
    featurizer = DefaultFeaturizer()
    batch = featurizer([as_shard_sample({"x.npy": object(), "cls": "1"})])
    assert featurizer.errors == 1 and batch["cls"].values.tolist() == ["1"]


# -- files -----------------------------------------------------------------------------------


def test_record_format_by_extension():
    assert record_format("s3://b/log.jsonl") == "jsonl"
    assert record_format("a.ndjson.gz") == "jsonl"
    assert record_format("x/part-0.parquet") == "parquet"
    assert record_format("shard-000.tar") is None


def test_jsonl_and_parquet_read_as_samples(tmp_path):
    samples = [{**r, "__key__": None} for r in rows(5, 0)]
    samples[1]["__key__"] = "req-1"
    for path in (
        write_jsonl(tmp_path / "a.jsonl", samples),
        write_parquet(tmp_path / "a.parquet", samples),
    ):
        got = list(read_records(path))
        assert [s["__key__"] for s in got] == [
            "a-000000",
            "req-1",
            "a-000002",
            "a-000003",
            "a-000004",
        ]
        assert {s["__url__"] for s in got} == {path}
        assert np.allclose(load_npy(got[2]["x.npy"]), samples[2]["x.npy"])
        assert got[2]["cls"] == str(samples[2]["cls"])


def test_gzipped_jsonl(tmp_path):
    import gzip

    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"cls": 1}\n\n{"cls": 2}\n'))
    assert [s["cls"] for s in read_records(str(path))] == ["1", "2"]


def test_bad_lines_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"cls": 1}\n{"cls": \n')
    with pytest.raises(ShardReadError, match=r"bad.jsonl at byte 11: line 2 is not JSON"):
        list(read_records(str(path)))
    path.write_text('{"cls": 1}\n[1, 2]\n')
    with pytest.raises(ShardReadError, match="line 2: expected a JSON object, got list"):
        list(read_records(str(path)))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ShardReadError, match="bad.parquet: not a readable Parquet file"):
        list(read_records(str(tmp_path / "bad.parquet")))
    with pytest.raises(ShardReadError, match="does not exist"):
        list(read_records(str(tmp_path / "none.jsonl")))


def test_record_files_profile_like_the_same_samples_in_a_tar(tmp_path):
    samples = rows(N, 3)
    tar = profile_shard(write_tar(tmp_path / "a.tar", samples))
    for path in (
        write_jsonl(tmp_path / "a.jsonl", samples),
        write_parquet(tmp_path / "a.parquet", samples),
    ):
        profile = profile_shard(path)
        assert profile.n == N and profile.fingerprint == tar.fingerprint
        assert sorted(profile.kinds) == sorted(tar.kinds)
        for name in ("x.npy[0]", "x.npy[3]"):
            assert profile.numeric(name)[0].mean == pytest.approx(tar.numeric(name)[0].mean)
        assert profile.categorical("cls").counts() == tar.categorical("cls").counts()


def test_cli_profiles_and_checks_record_files(tmp_path, capsys):
    store = str(tmp_path / "store")
    refs = [write_tar(tmp_path / f"ref-{i}.tar", rows(N, i)) for i in range(3)]
    assert main(["profile", *refs, "--store", store, "--quiet"]) == 0
    assert main(["reference", "v1", *refs, "--store", store]) == 0
    clean = write_jsonl(tmp_path / "requests.jsonl", rows(N, 10))
    shifted = write_parquet(tmp_path / "requests.parquet", rows(N, 11, shift=1.0))
    assert main(["profile", clean, "--store", store, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["check", clean, shifted, "--store", store, "--reference", "v1", "--json"]) == 1
    report = {Path(s["url"]).name: s for s in json.loads(capsys.readouterr().out)["shards"]}
    assert not report["requests.jsonl"]["drifted"] and report["requests.parquet"]["drifted"]
    assert report["requests.jsonl"]["n"] == N


def test_record_files_on_s3(s3_bucket, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    local = write_jsonl(tmp_path / "log.jsonl", rows(50, 0))
    fs.put(local, f"{s3_bucket}/logs/log.jsonl")
    store = ProfileStore(f"s3://{s3_bucket}/drift")
    summary = profile_shards(f"s3://{s3_bucket}/logs/*.jsonl", store, progress=False)
    assert summary.profiled == 1 and summary.samples == 50
    (profile,) = [store.get_profile(r["url"], r["version"]) for r in store.catalog()]
    assert profile.n == 50 and profile.url == f"s3://{s3_bucket}/logs/log.jsonl"
