"""The one .npy parser (driftloader.npy): numpy's own files load exactly; every refused input
raises NpyFormatError (a ValueError) without unpickling; features and decode() share it."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import webdataset as wds

import driftloader as dl
from driftloader import pipeline
from driftloader.errors import DriftloaderError
from driftloader.features import DefaultFeaturizer
from driftloader.npy import MAX_HEADER, NpyFormatError, load_npy, read_header


def npy(array: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def with_header(header: str, data: bytes = b"", version: int = 1) -> bytes:
    text = header.encode("latin1")
    width = 2 if version == 1 else 4
    return b"\x93NUMPY" + bytes([version, 0]) + len(text).to_bytes(width, "little") + text + data


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype="<f4").reshape(3, 4),
        np.asfortranarray(np.arange(6, dtype=">i8").reshape(2, 3)),
        np.array(2.5),
        np.zeros((0, 3)),
        np.array(["ab", "c"]),
        np.array([1 + 2j]),
    ],
)
def test_numpy_files_load_exactly(array: np.ndarray) -> None:
    got = load_npy(npy(array))
    np.testing.assert_array_equal(got, array)
    assert got.dtype == array.dtype and got.shape == array.shape
    assert load_npy(npy(array), copy=True).flags.writeable


def test_versions_2_and_3_load() -> None:
    raw = with_header("{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }\n", b"\1\0\2\0", 2)
    assert load_npy(raw).tolist() == [1, 2]
    raw3 = with_header("{'descr': '<i2', 'fortran_order': False, 'shape': (1,), }\n", b"\7\0", 3)
    assert load_npy(raw3).tolist() == [7]


REFUSED = {
    "bad magic": (b"\x93NUMPZ\x01\x00" + b"\0" * 20, "bad magic"),
    "short": (b"\x93NUMPY\x01", "bad magic"),
    "version 4": (with_header("{}", version=1)[:6] + b"\x04\x00\x02\x00{}", "version 4"),
    "huge header": (b"\x93NUMPY\x01\x00" + (60_000).to_bytes(2, "little"), "limit"),
    "truncated header": (b"\x93NUMPY\x01\x00\x50\x00{'descr'", "truncated .npy header"),
    "not a dict": (with_header("[1, 2]\n"), "bad .npy header"),
    "extra key": (
        with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}\n"),
        "bad .npy header",
    ),
    "call in header": (
        with_header("{'descr': __import__('os').system('true'), 'fortran_order': 0}\n"),
        "bad .npy header",
    ),
    "negative dim": (
        with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }\n"),
        "shape",
    ),
    "bool dim": (
        with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (True,), }\n", b"\0" * 8),
        "shape",
    ),
    "bad order": (
        with_header("{'descr': '<f8', 'fortran_order': 1, 'shape': (1,), }\n", b"\0" * 8),
        "fortran_order",
    ),
    "bad descr": (
        with_header("{'descr': 'nonsense', 'fortran_order': False, 'shape': (1,), }\n"),
        "dtype",
    ),
    "object dtype": (npy(np.array([1, None], dtype=object), allow_pickle=True), "pickle"),
    "truncated data": (npy(np.arange(100.0))[:-8], "truncated .npy data"),
    "huge shape, no data": (
        with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }\n"),
        "truncated .npy data",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_inputs_raise_npy_format_error(name: str) -> None:
    raw, message = REFUSED[name]
    with pytest.raises(NpyFormatError, match=message) as info:
        load_npy(raw)
    assert isinstance(info.value, ValueError) and isinstance(info.value, DriftloaderError)


def test_numeric_only_refuses_strings_and_complex() -> None:
    for array in (np.array(["a"]), np.array([1j])):
        with pytest.raises(NpyFormatError, match="unsupported array dtype"):
            load_npy(npy(array), numeric_only=True)
    assert load_npy(npy(np.array([True])), numeric_only=True).tolist() == [True]


def test_header_limit_and_cache() -> None:
    head = read_header(npy(np.zeros((2, 3), dtype="<f4")))
    assert (head.shape, head.dtype, head.count, head.nbytes) == ((2, 3), np.float32, 6, 24)
    assert read_header(npy(np.zeros((2, 3), dtype="<f4"))) is head
    assert MAX_HEADER == 10_000


def test_a_repeated_header_is_recognised_and_still_checked() -> None:
    """The header of the last array parsed is recognised by its bytes (shards repeat one);
    the data's length and ``numeric_only`` are checked all the same."""
    a, b = np.arange(4, dtype="<f4"), np.arange(6, dtype="<i8").reshape(2, 3)
    for array in (a, b, a, a, b, b):
        got = load_npy(npy(array))
        np.testing.assert_array_equal(got, array)
        assert (got.dtype, got.shape) == (array.dtype, array.shape)
    raw = npy(a)
    assert load_npy(raw).tolist() == [0, 1, 2, 3]
    with pytest.raises(NpyFormatError, match="truncated .npy data"):
        load_npy(raw[:-1])  # the same header, one byte of data short
    text = npy(np.array(["ab"]))
    assert load_npy(text).tolist() == ["ab"]
    with pytest.raises(NpyFormatError, match="unsupported array dtype"):
        load_npy(text, numeric_only=True)


class _Tripwire:
    def __reduce__(self):  # unpickling this would raise
        return (pytest.fail, ("an .npy payload was unpickled",))


def test_pipeline_decode_and_features_share_the_strict_parser(tmp_path) -> None:
    # before: pipeline.npy_loads had its own parser that read an extra header key, a
    # truncated payload (as a short array) and a bool dimension without complaint.
    bad = REFUSED["extra key"][0]
    with pytest.raises(NpyFormatError):
        pipeline.npy_loads(bad)
    with pytest.raises(NpyFormatError):
        pipeline.npy_loads(REFUSED["truncated data"][0])
    payload = npy(np.array([_Tripwire()], dtype=object), allow_pickle=True)
    path = tmp_path / "a.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "a", "x.npy": payload})
        sink.write({"__key__": "b", "x.npy": npy(np.arange(3))})
    with pytest.raises(ValueError, match="pickle"):
        list(dl.DriftDataset(str(path)).decode(allow_pickle=True))
    (good,) = list(dl.DriftDataset(str(path)).select(lambda s: s["__key__"] == "b").decode())
    assert good["x.npy"].tolist() == [0, 1, 2] and not good["x.npy"].flags.writeable  # a view
    featurizer = DefaultFeaturizer()
    featurizer([{"__key__": "a", "x.npy": payload}, {"__key__": "b", "x.npy": bad}])
    assert featurizer.errors == 2
    assert pickle.dumps(featurizer)  # still picklable for worker processes


def test_c_order_aligned_arrays_are_read_only_views_of_the_bytes() -> None:
    array = np.arange(24, dtype="<f8").reshape(4, 6)
    raw = npy(array)
    got = load_npy(raw)
    assert np.shares_memory(got, np.frombuffer(raw, np.uint8))  # no copy
    assert not got.flags.writeable and got.flags.c_contiguous and got.flags.aligned
    np.testing.assert_array_equal(got, array)
    writable = bytearray(raw)  # a view of a mutable buffer does not write through either
    assert not load_npy(writable).flags.writeable
    assert pipeline.npy_loads(raw).base is not None  # decode() gives the view too
    np.testing.assert_array_equal(pipeline.npy_loads(raw), array)


def test_misaligned_and_fortran_data_are_copied() -> None:
    array = np.arange(6, dtype="<f8")
    shifted = memoryview(b"x" + npy(array))[1:]  # the data one byte off its 8-byte alignment
    got = load_npy(shifted)
    assert got.flags.aligned and not np.shares_memory(got, np.frombuffer(shifted, np.uint8))
    np.testing.assert_array_equal(got, array)
    fortran = np.asfortranarray(np.arange(6, dtype="<i4").reshape(2, 3))
    raw = npy(fortran)
    got = load_npy(raw)
    assert got.flags.f_contiguous and not np.shares_memory(got, np.frombuffer(raw, np.uint8))
    np.testing.assert_array_equal(got, fortran)


def test_decoded_samples_share_the_sample_bytes(tmp_path) -> None:
    path = tmp_path / "v.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(3):
            sink.write({"__key__": f"k{i}", "x.npy": npy(np.full(5, i, dtype="<f4"))})
    samples = list(dl.DriftDataset(str(path), shuffle=False))
    for i, sample in enumerate(dl.DriftDataset(str(path), shuffle=False).decode()):
        x = sample["x.npy"]
        assert not x.flags.writeable and x.tolist() == [float(i)] * 5
        assert isinstance(x.base, (bytes, memoryview, np.ndarray))
    assert all(isinstance(s["x.npy"], bytes) for s in samples)
