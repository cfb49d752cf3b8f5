"""Featurizers: default inference per field type, exact values against numpy, missing values,
errors counted (never unpickled), stable fingerprints, user callables and specs."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from driftloader.errors import DriftloaderError
from driftloader.features import (
    FEATURES_VERSION,
    CallableFeaturizer,
    Column,
    DefaultFeaturizer,
    FeatureSpec,
    FeatureWarning,
    FeaturizeError,
    Featurizer,
    SpecFeaturizer,
    featurizer_from,
    load_npy,
)

URL = "s3://bucket/shard-000001.tar"


def npy(array: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def sample(i: int, **fields: object) -> dict:
    return {"__key__": f"s{i:04d}", "__url__": URL, **fields}


def numeric(batch: dict[str, Column], name: str) -> np.ma.MaskedArray:
    column = batch[name]
    assert column.kind == "numeric"
    assert isinstance(column.values, np.ma.MaskedArray)
    assert column.values.dtype == np.float64
    return column.values


def objects(batch: dict[str, Column], name: str, kind: str) -> list:
    column = batch[name]
    assert column.kind == kind
    assert column.values.dtype == object
    return column.values.tolist()


def mixed_samples(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(["alpha", "Beta", "gamma", "d3lta"], size=8))
        out.append(
            sample(
                i,
                **{
                    "x.npy": npy(rng.standard_normal(64).astype(np.float32)),
                    "cls": str(int(rng.integers(0, 10))).encode(),
                    "json": json.dumps({"size": float(rng.random()), "src": "cam"}).encode(),
                    "txt": words.encode(),
                    "bin": rng.bytes(4096),
                },
            )
        )
    return out


# -- .npy arrays ------------------------------------------------------------------------------


def test_small_vector_becomes_one_feature_per_element() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(5).astype(np.float32) for _ in range(7)]
    batch = DefaultFeaturizer()([sample(i, **{"x.npy": npy(a)}) for i, a in enumerate(arrays)])
    joint = [f"joint:x.npy/dir{j}" for j in range(8)]
    assert sorted(batch) == sorted([f"x.npy[{j}]" for j in range(5)] + joint)
    stacked = np.stack(arrays).astype(np.float64)
    for j in range(5):
        values = numeric(batch, f"x.npy[{j}]")
        np.testing.assert_array_equal(values.data, stacked[:, j])
        assert not values.mask.any()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian ints, 2-D: C-order elements
        np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        np.array([True, False, True]),
        np.array(3.5),  # 0-d: one element
        np.arange(4, dtype=np.uint8),
    ],
)
def test_vector_elements_follow_numpy_ravel(array: np.ndarray) -> None:
    batch = DefaultFeaturizer(joint=None)([sample(0, **{"a.npy": npy(array)})])
    expected = np.asarray(array, dtype=np.float64).ravel()
    got = [numeric(batch, f"a.npy[{j}]")[0] for j in range(expected.size)]
    np.testing.assert_array_equal(got, expected)
    assert len(batch) == expected.size


def test_large_array_becomes_summary_features() -> None:
    rng = np.random.default_rng(2)
    arrays = [rng.gamma(2.0, size=(8, 9)).astype(np.float32), rng.integers(0, 255, 300, np.uint8)]
    batch = DefaultFeaturizer()([sample(i, **{"e.npy": npy(a)}) for i, a in enumerate(arrays)])
    assert sorted(batch) == [f"e.npy.{s}" for s in ("max", "mean", "min", "size", "std")]
    for i, a in enumerate(arrays):
        a64 = a.astype(np.float64)
        assert numeric(batch, "e.npy.mean")[i] == pytest.approx(a64.mean(), rel=1e-12)
        assert numeric(batch, "e.npy.std")[i] == pytest.approx(a64.std(), rel=1e-12)
        assert numeric(batch, "e.npy.min")[i] == a64.min()
        assert numeric(batch, "e.npy.max")[i] == a64.max()
        assert numeric(batch, "e.npy.size")[i] == a.size


def test_max_vector_sets_the_threshold() -> None:
    samples = [sample(0, **{"x.npy": npy(np.arange(4.0))})]
    assert "x.npy[3]" in DefaultFeaturizer(max_vector=4)(samples)
    assert "x.npy.mean" in DefaultFeaturizer(max_vector=3)(samples)


def test_variable_length_vectors_are_padded_with_masked_entries() -> None:
    samples = [
        sample(0, **{"v.npy": npy(np.array([1.0, 2.0]))}),
        sample(1, **{"v.npy": npy(np.array([5.0]))}),
    ]
    batch = DefaultFeaturizer()(samples)
    np.testing.assert_array_equal(numeric(batch, "v.npy[0]").data, [1.0, 5.0])
    assert numeric(batch, "v.npy[1]").mask.tolist() == [False, True]
    assert numeric(batch, "v.npy[1]")[0] == 2.0


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int16]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=9),
    )
)
def test_any_numeric_array_matches_numpy(array: np.ndarray) -> None:
    batch = DefaultFeaturizer(max_vector=16)([sample(0, **{"x.npy": npy(array)})])
    flat = array.astype(np.float64).ravel()
    if flat.size <= 16:
        got = np.array([numeric(batch, f"x.npy[{j}]").data[0] for j in range(flat.size)])
        np.testing.assert_array_equal(got, flat)  # NaN compares equal to NaN here
    else:
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(numeric(batch, "x.npy.mean").data[0], flat.mean(), rtol=1e-9)
            np.testing.assert_array_equal(numeric(batch, "x.npy.max").data[0], flat.max())
        assert numeric(batch, "x.npy.size")[0] == flat.size


def test_nan_and_inf_are_kept_as_values_not_masked() -> None:
    arrays = [np.array([np.nan, 1.0]), np.array([np.inf, -np.inf])]
    batch = DefaultFeaturizer()([sample(i, **{"x.npy": npy(a)}) for i, a in enumerate(arrays)])
    first, second = numeric(batch, "x.npy[0]"), numeric(batch, "x.npy[1]")
    assert not first.mask.any() and not second.mask.any()
    assert np.isnan(first.data[0]) and first.data[1] == np.inf
    assert second.data.tolist() == [1.0, -np.inf]
    big = DefaultFeaturizer(max_vector=1)([sample(0, **{"x.npy": npy(np.array([np.nan, 1.0]))})])
    assert np.isnan(numeric(big, "x.npy.mean").data[0])
    assert not numeric(big, "x.npy.mean").mask[0]


@pytest.mark.parametrize(
    "raw",
    [
        b"not an npy file at all",
        npy(np.arange(10.0))[:-8],  # truncated data
        npy(np.arange(10.0))[:20],  # truncated header
        npy(np.arange(3.0)).replace(b"'descr'", b"'dexcr'"),  # bad header keys
        npy(np.arange(3.0)).replace(b"'shape': (3,)", b"'shape': __import__('os')"),
        npy(np.array([1 + 2j])),  # complex: unsupported dtype
        npy(np.array(["a", "b"])),  # strings: unsupported dtype
    ],
)
def test_corrupt_or_unsupported_npy_is_counted_not_raised(raw: bytes) -> None:
    featurizer = DefaultFeaturizer()
    good = npy(np.array([1.0, 2.0]))
    batch = featurizer([sample(0, **{"x.npy": raw}), sample(1, **{"x.npy": good})])
    assert featurizer.errors == 1
    values = numeric(batch, "x.npy[0]")
    assert values.mask.tolist() == [True, False]
    assert values.data[1] == 1.0


class _Tripwire:
    """Unpickling this appends to ``UNPICKLED``: featurization must never do it."""

    def __reduce__(self) -> tuple:
        return (UNPICKLED.append, ("unpickled!",))


UNPICKLED: list[str] = []


def test_object_arrays_and_pickles_are_never_unpickled() -> None:
    UNPICKLED.clear()
    payload = npy(np.array([_Tripwire(), 1], dtype=object), allow_pickle=True)
    featurizer = DefaultFeaturizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureWarning)
        batch = featurizer(
            [
                sample(
                    0,
                    **{"x.npy": payload, "blob.pickle": pickle.dumps(_Tripwire()), "cls": b"1"},
                )
            ]
        )
    assert UNPICKLED == []
    assert featurizer.errors == 1
    assert sorted(batch) == ["cls"]
    with pytest.raises(ValueError, match="object arrays"):
        load_npy(payload)


# -- labels, JSON, text, images ---------------------------------------------------------------


def test_label_fields_are_categorical_integer_strings() -> None:
    samples = [
        sample(0, cls=b"3", **{"label": b"cat"}),
        sample(1, cls=b" 07\n"),
        sample(2, cls2=b"12"),
    ]
    batch = DefaultFeaturizer()(samples)
    assert objects(batch, "cls", "categorical") == ["3", "7", None]
    assert objects(batch, "cls2", "categorical") == [None, None, "12"]
    assert objects(batch, "label", "categorical") == ["cat", None, None]


def test_json_is_flattened_one_level() -> None:
    docs = [
        {"size": 1.5, "src": "cam", "ok": True, "box": {"w": 3, "tag": "a"}, "pts": [1, 2, 3]},
        {"size": 2, "src": "web", "ok": False, "note": None, "deep": {"a": {"b": 1}}},
    ]
    batch = DefaultFeaturizer()(
        [sample(i, json=json.dumps(d).encode()) for i, d in enumerate(docs)]
    )
    assert sorted(batch) == [
        "json.box.tag",
        "json.box.w",
        "json.ok",
        "json.pts.len",
        "json.size",
        "json.src",
    ]
    np.testing.assert_array_equal(numeric(batch, "json.size").data, [1.5, 2.0])
    assert objects(batch, "json.src", "categorical") == ["cam", "web"]
    assert objects(batch, "json.ok", "categorical") == ["true", "false"]
    assert numeric(batch, "json.box.w").mask.tolist() == [False, True]
    assert numeric(batch, "json.box.w")[0] == 3.0
    assert numeric(batch, "json.pts.len")[0] == 3.0
    assert objects(batch, "json.box.tag", "categorical") == ["a", None]


def test_json_value_of_the_other_kind_is_an_error_not_a_new_column() -> None:
    featurizer = DefaultFeaturizer()
    featurizer([sample(0, json=b'{"a": 1}')])
    batch = featurizer([sample(1, json=b'{"a": "one"}'), sample(2, json=b'{"a": 2}')])
    assert numeric(batch, "json.a").mask.tolist() == [True, False]
    assert featurizer.errors == 1
    assert featurizer([sample(3, json=b"{not json")]) == {}
    assert featurizer.errors == 2


def text_stats(text: str) -> list[float]:
    n = max(len(text), 1)
    return [
        len(text),
        len(text.split()),
        sum(c.isalpha() for c in text) / n,
        sum(c.isdigit() for c in text) / n,
        sum(c.isupper() for c in text) / n,
        sum(c.isspace() for c in text) / n,
    ]


TEXT_NAMES = ["len", "words", "alpha_ratio", "digit_ratio", "upper_ratio", "space_ratio"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=6))
def test_text_features_match_python_string_methods(texts: list[str]) -> None:
    batch = DefaultFeaturizer()([sample(i, txt=t.encode("utf-8")) for i, t in enumerate(texts)])
    for j, stat in enumerate(TEXT_NAMES):
        expected = [text_stats(t)[j] for t in texts]
        np.testing.assert_allclose(numeric(batch, f"txt.{stat}").data, expected, rtol=1e-12)
    assert objects(batch, "txt.tokens", "tokens") == texts


def test_text_fields_and_invalid_utf8() -> None:
    featurizer = DefaultFeaturizer()
    batch = featurizer([sample(0, caption=b"Hello World 42"), sample(1, caption=b"\xff\xfe")])
    assert featurizer.errors == 1
    assert numeric(batch, "caption.len").tolist() == [14.0, None]
    assert numeric(batch, "caption.words")[0] == 3.0
    assert numeric(batch, "caption.upper_ratio")[0] == pytest.approx(2 / 14)
    assert objects(batch, "caption.tokens", "tokens") == ["Hello World 42", None]


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_images_byte_size_and_decoded_stats() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    samples = [sample(0, png=png(rgb)), sample(1, png=png(gray)), sample(2, png=b"garbage")]
    plain = DefaultFeaturizer(decode_images=False)(samples)
    assert sorted(plain) == ["png.bytes"]
    assert numeric(plain, "png.bytes").tolist() == [len(samples[i]["png"]) for i in range(3)]
    featurizer = DefaultFeaturizer()
    batch = featurizer(samples)
    assert featurizer.errors == 1
    assert numeric(batch, "png.width").tolist() == [7.0, 6.0, None]
    assert numeric(batch, "png.height").tolist() == [5.0, 4.0, None]
    assert numeric(batch, "png.bytes").tolist() == [len(samples[i]["png"]) for i in range(3)]
    assert objects(batch, "png.mode", "categorical") == ["RGB/3", "L/1", None]
    means = rgb.reshape(-1, 3).mean(axis=0)
    for c, name in enumerate(["png.red", "png.green", "png.blue"]):
        assert numeric(batch, name)[0] == pytest.approx(means[c] / means.sum())
        assert numeric(batch, name)[1] == pytest.approx(1 / 3)


# -- unknown fields, missing fields, column order ---------------------------------------------


def test_unknown_field_warns_once_per_field_and_is_skipped() -> None:
    featurizer = DefaultFeaturizer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            batch = featurizer([sample(i, bin=b"\x00" * 4096, **{"m.pyd": b"x", "cls": b"1"})])
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, FeatureWarning))
    assert messages == [
        "field 'bin' has no default featurizer; skipped",
        "field 'm.pyd' has no default featurizer; skipped",
    ]
    assert sorted(batch) == ["cls"]


def test_missing_fields_are_masked_or_none() -> None:
    samples = [
        sample(0, cls=b"1", txt=b"hi", **{"x.npy": npy(np.array([1.0]))}),
        sample(1),
        sample(2, json=b'{"a": 5}'),
    ]
    batch = DefaultFeaturizer()(samples)
    assert all(len(column.values) == 3 for column in batch.values())
    assert numeric(batch, "x.npy[0]").mask.tolist() == [False, True, True]
    assert numeric(batch, "txt.len").mask.tolist() == [False, True, True]
    assert numeric(batch, "json.a").mask.tolist() == [True, True, False]
    assert objects(batch, "cls", "categorical") == ["1", None, None]
    assert objects(batch, "txt.tokens", "tokens") == ["hi", None, None]


def test_columns_are_sorted_and_stable_across_batches_and_instances() -> None:
    first = DefaultFeaturizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureWarning)
        a = first(mixed_samples(10, seed=1))
        b = first(mixed_samples(30, seed=2))
        c = DefaultFeaturizer()(list(reversed(mixed_samples(5, seed=3))))
    assert list(a) == sorted(a)
    assert list(a) == list(b) == list(c)
    assert {n: col.kind for n, col in a.items()} == {n: col.kind for n, col in c.items()}
    assert len(a) == 64 + 8 + 1 + 2 + 7  # x.npy[i], joint, cls, json.size/src, txt stats + tokens
    assert set(first.schema) == set(a)
    assert first.schema["x.npy[3]"] == {"kind": "numeric", "field": "x.npy"}


def test_empty_batch_gives_no_columns_and_bad_batches_raise() -> None:
    assert DefaultFeaturizer()([]) == {}
    with pytest.raises(TypeError):
        DefaultFeaturizer()({"__key__": "a"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DefaultFeaturizer()(["not a dict"])  # type: ignore[list-item]


def test_explicit_fields_restrict_featurization() -> None:
    batch = DefaultFeaturizer(fields=["cls"])(mixed_samples(3))
    assert list(batch) == ["cls"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_vector": -1}, "-1"),
        ({"max_vector": 2.5}, "2.5"),
        ({"max_vector": True}, "True"),
        ({"decode_images": "yes"}, "yes"),
        ({"fields": "cls"}, "cls"),
        ({"fields": ["bin"]}, "bin"),
        ({"fields": ["__key__"]}, "__key__"),
    ],
)
def test_default_featurizer_validates_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DefaultFeaturizer(**kwargs)


# -- fingerprints ---------------------------------------------------------------------------


def test_fingerprint_is_stable_and_depends_on_the_spec() -> None:
    fp = DefaultFeaturizer().fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert DefaultFeaturizer().fingerprint == fp
    assert DefaultFeaturizer(fields=None, max_vector=64).fingerprint == fp
    assert DefaultFeaturizer(max_vector=32).fingerprint != fp
    assert DefaultFeaturizer(decode_images=False).fingerprint != fp
    assert DefaultFeaturizer(image_size=64).fingerprint != fp
    assert DefaultFeaturizer(joint=None).fingerprint != fp
    assert DefaultFeaturizer(joint={"k": 4}).fingerprint != fp
    assert DefaultFeaturizer(joint={"seed": 1}).fingerprint != fp
    assert DefaultFeaturizer(joint={"scales": {"x.npy": [2.0]}}).fingerprint != fp
    assert DefaultFeaturizer(max_keys=10).fingerprint != fp
    assert DefaultFeaturizer(fields=["cls"]).fingerprint != fp
    assert (
        DefaultFeaturizer(fields=["cls", "txt"]).fingerprint
        == DefaultFeaturizer(fields=["txt", "cls"]).fingerprint
    )
    featurizer = DefaultFeaturizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureWarning)
        featurizer(mixed_samples(3))
    assert featurizer.fingerprint == fp  # data seen does not change it
    spec = FeatureSpec({"cls": "categorical"})
    assert spec.fingerprint not in (fp, FeatureSpec({"cls": "text"}).fingerprint)
    assert FEATURES_VERSION  # part of the hashed description


def test_fingerprint_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from driftloader.features import DefaultFeaturizer, FeatureSpec;"
        "print(DefaultFeaturizer(max_vector=8).fingerprint);"
        "print(FeatureSpec({'json.size': 'numeric', 'cls': 'categorical'}).fingerprint)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        DefaultFeaturizer(max_vector=8).fingerprint,
        FeatureSpec({"cls": "categorical", "json.size": "numeric"}).fingerprint,
    ]


def double(value: np.ndarray) -> np.ndarray:
    return value * 2


def halve(value: np.ndarray) -> np.ndarray:
    return value / 2


def test_spec_fingerprint_includes_transform_identity() -> None:
    base = FeatureSpec({"x.npy": "vector"})
    with_double = FeatureSpec({"x.npy": "vector"}, transforms={"x.npy": double})
    with_halve = FeatureSpec({"x.npy": "vector"}, transforms={"x.npy": halve})
    fps = {base.fingerprint, with_double.fingerprint, with_halve.fingerprint}
    assert len(fps) == 3
    assert (
        with_double.fingerprint == FeatureSpec({"x.npy": "vector"}, {"x.npy": double}).fingerprint
    )
    assert "double" in with_double.describe()["transforms"]["x.npy"]["name"]


# -- FeatureSpec ----------------------------------------------------------------------------


def test_feature_spec_selects_fields_paths_and_transforms() -> None:
    spec = FeatureSpec(
        {
            "x.npy": "vector",
            "cls": "categorical",
            "txt": "text",
            "json.size": "numeric",
            "json.box.w": "numeric",
            "score": "numeric",
        },
        transforms={"x.npy": lambda a: a[:2], "txt": str.lower},
    )
    samples = [
        sample(
            0,
            score=b" 0.25 ",
            cls=b"4",
            txt=b"ABC",
            json=b'{"size": 3, "box": {"w": 7}}',
            **{"x.npy": npy(np.array([1.0, 2.0, 3.0])), "bin": b"ignored"},
        ),
        sample(1, score=b"nope", json=b'{"size": "big"}'),
    ]
    featurizer = featurizer_from(spec)
    assert isinstance(featurizer, SpecFeaturizer)
    batch = featurizer(samples)
    assert list(batch) == sorted(batch)
    assert {n for n in batch if n.startswith("x.npy")} == {"x.npy[0]", "x.npy[1]"}
    assert numeric(batch, "x.npy[1]")[0] == 2.0
    assert objects(batch, "txt.tokens", "tokens") == ["abc", None]
    assert numeric(batch, "txt.upper_ratio")[0] == 0.0
    assert numeric(batch, "json.size").tolist() == [3.0, None]
    assert numeric(batch, "json.box.w").tolist() == [7.0, None]
    assert numeric(batch, "score").tolist() == [0.25, None]
    assert objects(batch, "cls", "categorical") == ["4", None]
    assert featurizer.errors == 2  # "nope" and "big" are not numbers


def test_feature_spec_summary_and_auto() -> None:
    spec = FeatureSpec({"x.npy": "summary", "json": "auto"})
    batch = spec.featurizer()([sample(0, json=b'{"a": 1}', **{"x.npy": npy(np.arange(4.0))})])
    assert sorted(batch) == [
        "json.a",
        "x.npy.max",
        "x.npy.mean",
        "x.npy.min",
        "x.npy.size",
        "x.npy.std",
    ]
    assert numeric(batch, "x.npy.mean")[0] == 1.5


def test_transform_errors_raise_featurize_error_naming_sample_and_shard() -> None:
    def broken(value: str) -> str:
        raise RuntimeError("boom")

    featurizer = FeatureSpec({"txt": "text"}, transforms={"txt": broken}).featurizer()
    with pytest.raises(FeaturizeError, match="s0001") as info:
        featurizer([sample(0), sample(1, txt=b"x")])
    assert info.value.url == URL and URL in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "features, transforms, match",
    [
        ({}, None, "non-empty"),
        ({"x.npy": "vectors"}, None, "vectors"),
        ({"bin": "auto"}, None, "bin"),
        ({"json.a": "image"}, None, "json.a"),
        ({"__key__": "categorical"}, None, "__key__"),
        ({"cls": "categorical"}, {"txt": str.lower}, "txt"),
        ({"cls": "categorical"}, {"cls": 3}, "3"),
    ],
)
def test_feature_spec_validates_arguments(
    features: dict, transforms: dict | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureSpec(features, transforms)


# -- user callables ---------------------------------------------------------------------------


def user_features(s: dict) -> dict:
    n = len(s.get("txt", b""))
    return {"n": n, "has_cls": "cls" in s, "kind": "long" if n > 3 else "short", "gone": None}


def test_callable_featurizer_batches_user_rows() -> None:
    samples = [sample(0, txt=b"hello", cls=b"1"), sample(1, txt=b"hi")]
    featurizer = featurizer_from(user_features)
    assert isinstance(featurizer, CallableFeaturizer)
    batch = featurizer(samples)
    assert list(batch) == ["has_cls", "kind", "n"]
    assert numeric(batch, "n").tolist() == [5.0, 2.0]
    assert objects(batch, "kind", "categorical") == ["long", "short"]
    assert objects(batch, "has_cls", "categorical") == ["true", "false"]
    other = CallableFeaturizer(lambda s: {"n": 1})
    assert featurizer.fingerprint == CallableFeaturizer(user_features).fingerprint
    assert featurizer.fingerprint != other.fingerprint


def test_callable_errors_raise_featurize_error_naming_key_and_url() -> None:
    def fails_on_second(s: dict) -> dict:
        if s["__key__"] == "s0001":
            raise KeyError("label")
        return {"a": 1.0}

    with pytest.raises(FeaturizeError) as info:
        CallableFeaturizer(fails_on_second)([sample(0), sample(1)])
    error = info.value
    assert error.key == "s0001" and error.url == URL
    assert "s0001" in str(error) and URL in str(error) and "label" in str(error)
    assert isinstance(error, DriftloaderError) and isinstance(error, ValueError)
    assert isinstance(error.__cause__, KeyError)


@pytest.mark.parametrize("row", [[1, 2], {"a": [1, 2]}, {3: 1.0}])
def test_callable_returning_bad_rows_raises_featurize_error(row: object) -> None:
    with pytest.raises(FeaturizeError, match="s0000"):
        CallableFeaturizer(lambda s: row)([sample(0)])


def test_featurizer_from_dispatch() -> None:
    assert isinstance(featurizer_from(None), DefaultFeaturizer)
    default = DefaultFeaturizer(max_vector=3)
    assert featurizer_from(default) is default
    assert isinstance(featurizer_from(FeatureSpec({"cls": "categorical"})), SpecFeaturizer)
    assert isinstance(featurizer_from(len), CallableFeaturizer)
    assert isinstance(default, Featurizer)
    with pytest.raises(ValueError, match="42"):
        featurizer_from(42)
    with pytest.raises(ValueError):
        CallableFeaturizer("not callable")  # type: ignore[arg-type]


# -- integration and speed ------------------------------------------------------------------


def test_batches_feed_a_profile() -> None:
    from driftloader.profile import Profile

    featurizer = DefaultFeaturizer()
    profile = Profile(fingerprint=featurizer.fingerprint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureWarning)
        for seed in range(2):
            profile.update(featurizer(mixed_samples(20, seed=seed)))
    assert profile.n == 40
    assert profile.kinds["txt.tokens"] == "tokens"
    assert profile.kinds["x.npy[0]"] == "numeric"


def test_featurizing_a_thousand_samples_is_fast() -> None:
    samples = mixed_samples(1000)
    featurizer = DefaultFeaturizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureWarning)
        featurizer(samples)
        best = min(_timed(featurizer, samples) for _ in range(3))
    assert best < 0.5, f"{best * 1000:.0f} ms for 1,000 samples (target ~20-40 ms)"


def _timed(featurizer: Featurizer, samples: list[dict]) -> float:
    start = time.perf_counter()
    featurizer(samples)
    return time.perf_counter() - start
