"""Profile: update, back-fill of late features, merge laws, JSON round trip, corrupt input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from driftloader.errors import FingerprintMismatch, IncompatibleSketchError, ProfileFormatError
from driftloader.features import Column, DefaultFeaturizer, joint_name_parts
from driftloader.profile import Profile, ProfileConfig
from driftloader.sketches import sketch_from_dict

CONFIG = ProfileConfig(quantile_k=64, categorical_cap=8, token_buckets=32, reservoir_k=16)


def make_batch(n: int, seed: int = 0, extra: bool = False) -> dict[str, Column]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    x[rng.random(n) < 0.05] = np.nan
    batch = {
        "x": Column("numeric", np.ma.masked_array(x, mask=rng.random(n) < 0.1)),
        "cls": Column("categorical", np.array(rng.choice(["a", "b", "c", None], n), dtype=object)),
        "txt": Column(
            "tokens", np.array(rng.choice(["the cat", "a dog ran", None], n), dtype=object)
        ),
    }
    if extra:
        batch["y"] = Column("numeric", np.ma.asarray(rng.random(n) + 5))
    return batch


def sliced(batch: dict[str, Column], lo: int, hi: int) -> dict[str, Column]:
    return {k: Column(c.kind, c.values[lo:hi]) for k, c in batch.items()}


def profile(*batches: dict[str, Column], fp: str = "fp", **kw) -> Profile:
    p = Profile(fp, config=CONFIG, **kw)
    for b in batches:
        p.update(b)
    return p


def assert_equivalent(a: Profile, b: Profile) -> None:
    assert (a.n, a.errors, a.kinds) == (b.n, b.errors, b.kinds)
    for name, kind in a.kinds.items():
        if kind == "numeric":
            (ma, qa), (mb, qb) = a.numeric(name), b.numeric(name)
            assert (ma.n, ma.count, ma.missing, ma.nan, ma.min, ma.max) == (
                mb.n, mb.count, mb.missing, mb.nan, mb.min, mb.max,
            )  # fmt: skip
            assert ma.mean == pytest.approx(mb.mean, rel=1e-9, nan_ok=True)
            assert ma.var == pytest.approx(mb.var, rel=1e-9, nan_ok=True)
            assert (qa.n, qa.count) == (qb.n, qb.count)
            if qa.count:
                grid = np.linspace(qa.min, qa.max, 20)
                assert np.all(np.abs(qa.cdf(grid) - qb.cdf(grid)) <= qa.rank_error + qb.rank_error)
        elif kind == "categorical":
            ca, cb = a.categorical(name), b.categorical(name)
            assert (ca.counts(), ca.missing, ca.n) == (cb.counts(), cb.missing, cb.n)
        else:
            ta, tb = a.tokens(name), b.tokens(name)
            assert np.array_equal(ta.counts, tb.counts) and (ta.docs, ta.missing) == (
                tb.docs,
                tb.missing,
            )
    assert (a.reservoir is None) == (b.reservoir is None)
    if a.reservoir is not None:
        assert a.reservoir.seen == b.reservoir.seen == a.n
        assert a.reservoir.rows.shape == b.reservoir.rows.shape


def test_halves_merge_to_whole() -> None:
    batch = make_batch(400, extra=True)
    whole = profile(batch)
    halves = profile(sliced(batch, 0, 150)).merge(profile(sliced(batch, 150, 400)))
    assert_equivalent(halves, whole)
    m, _ = whole.numeric("x")
    x = batch["x"].values
    assert m.missing == int(x.mask.sum()) and m.count == int(np.isfinite(x.compressed()).sum())


def test_merge_is_commutative_and_associative() -> None:
    a, b, c = (
        profile(make_batch(50, 1)),
        profile(make_batch(70, 2, True)),
        profile(make_batch(30, 3)),
    )
    c.count_errors(2)
    left = Profile.merged([a, b]).merge(c)
    right = Profile.merged([a, Profile.merged([b, c])])
    swapped = Profile.merged([c, b, a])
    assert_equivalent(left, right)
    assert_equivalent(left, swapped)
    assert left.n == 150 and left.errors == 2
    np.testing.assert_array_equal(left.reservoir.rows, swapped.reservoir.rows)


def test_merged_leaves_inputs_untouched() -> None:
    a, b = profile(make_batch(20, 1)), profile(make_batch(20, 2, True))
    before = (a.to_dict(), b.to_dict())
    out = Profile.merged([a, b])
    assert (a.to_dict(), b.to_dict()) == before and out.n == 40
    with pytest.raises(ValueError):
        Profile.merged([])


def test_merge_refuses_other_fingerprint_and_config() -> None:
    a = profile(make_batch(10))
    with pytest.raises(FingerprintMismatch, match="other"):
        a.merge(profile(make_batch(10), fp="other"))
    with pytest.raises(IncompatibleSketchError):
        a.merge(Profile("fp").update(make_batch(10)))
    clash = profile({"x": Column("categorical", np.array(["q"], dtype=object))})
    with pytest.raises(IncompatibleSketchError, match="'x'"):
        a.merge(clash)
    assert a.n == 10


def test_late_feature_is_backfilled_as_missing() -> None:
    p = profile(make_batch(30, 1), make_batch(20, 2, extra=True), make_batch(10, 3))
    m, q = p.numeric("y")
    assert (p.n, m.n, q.n, m.missing, m.count) == (60, 60, 60, 40, 20)
    assert p.numeric("x")[0].n == 60
    assert p.reservoir.seen == 60 and p.reservoir.rows.shape == (16, 2)
    late = profile({"c": Column("categorical", np.array([None, "z"], dtype=object))})
    late.update({"t": Column("tokens", np.array(["hi"], dtype=object))})
    assert late.categorical("c").missing == 2 and late.tokens("t").missing == 2
    assert late.reservoir is None


def test_reservoir_marks_missing_columns_nan() -> None:
    p = profile({"a": Column("numeric", np.ma.asarray(np.ones(40)))})
    p.update({"b": Column("numeric", np.ma.asarray(np.full(40, 2.0)))})
    rows = p.reservoir.rows
    assert np.all(np.isnan(rows[:, 0]) == (rows[:, 1] == 2.0))
    assert np.all(np.isnan(rows[:, 1]) == (rows[:, 0] == 1.0))


def test_merge_carries_one_sided_features() -> None:
    a = profile({"a": Column("numeric", np.ma.asarray(np.ones(5)))})
    b = profile({"c": Column("categorical", np.array(["k"] * 3, dtype=object))})
    m = Profile.merged([a, b])
    assert m.numeric("a")[0].missing == 3 and m.categorical("c").missing == 5
    assert m.reservoir.seen == 8 and m.n == 8


def test_json_round_trip() -> None:
    p = profile(
        make_batch(200, extra=True), url="s3://b/shard-0.tar", version="v1", meta={"k": [1]}
    )
    p.count_errors(3)
    text = p.to_json()
    back = Profile.from_json(text)
    assert back.to_dict() == json.loads(text)
    assert_equivalent(back, p)
    assert back.summary() == p.summary() == {
        "url": "s3://b/shard-0.tar", "version": "v1", "source": None, "created": p.created,
        "n": 200, "errors": 3, "fingerprint": "fp", "n_features": 4,
    }  # fmt: skip
    assert back.config == CONFIG and back.meta == {"k": [1]}


def test_metadata_on_merge() -> None:
    a = profile(make_batch(5), url="u1", version="v", created=10.0, meta={"run": 1, "x": 2})
    b = profile(make_batch(5), url="u2", version="v", created=20.0, meta={"run": 1, "x": 3})
    m = Profile.merged([a, b])
    assert (m.url, m.version, m.created, m.meta) == (None, "v", 20.0, {"run": 1})


def _corruptions() -> list:
    def feature_n(d: dict) -> dict:
        d["features"]["x"]["sketches"]["moments"]["n"] += 1
        return d

    def bad_blob(d: dict) -> dict:
        d["features"]["x"]["sketches"]["quantiles"]["sketch"] = "!!"
        return d

    def drop_reservoir(d: dict) -> dict:
        d["reservoir"] = None
        return d

    def wrong_params(d: dict) -> dict:
        d["features"]["cls"]["sketches"]["categorical"]["params"]["cap"] = 3
        return d

    def missing_sketch(d: dict) -> dict:
        del d["features"]["x"]["sketches"]["quantiles"]
        return d

    return [
        lambda d: "not a dict",
        lambda d: {**d, "format": 99},
        lambda d: {**d, "format": True},
        lambda d: {k: v for k, v in d.items() if k != "n"},
        lambda d: {**d, "n": -5},
        lambda d: {**d, "features": []},
        lambda d: {**d, "config": {"quantile_k": 0}},
        lambda d: {**d, "fingerprint": 3},
        lambda d: {**d, "created": "yesterday"},
        feature_n,
        bad_blob,
        drop_reservoir,
        wrong_params,
        missing_sketch,
    ]


@pytest.mark.parametrize("corrupt", _corruptions())
def test_corrupt_dict_raises_format_error(corrupt) -> None:
    d = json.loads(profile(make_batch(30)).to_json())
    with pytest.raises(ProfileFormatError):
        Profile.from_dict(corrupt(d))


def test_from_json_garbage() -> None:
    for text in ("", "{", "[1, 2]", "null"):
        with pytest.raises(ProfileFormatError):
            Profile.from_json(text)


def test_accessors_and_validation() -> None:
    p = profile(make_batch(5))
    with pytest.raises(KeyError, match="nope"):
        p.numeric("nope")
    with pytest.raises(KeyError, match="categorical"):
        p.numeric("cls")
    with pytest.raises(ValueError, match="disagree"):
        p.update(
            {
                "a": Column("numeric", np.ma.asarray(np.ones(3))),
                "b": Column("numeric", np.ma.asarray(np.ones(4))),
            }
        )
    with pytest.raises(ValueError, match="-1"):
        p.count_errors(-1)
    with pytest.raises(ValueError, match="quantile_k"):
        ProfileConfig(quantile_k=0)
    with pytest.raises(ValueError, match="fingerprint"):
        Profile("")


def test_absent_feature_and_explicit_n_samples() -> None:
    p = profile(make_batch(10))
    p.update({}, n_samples=4)
    p.update({"cls": Column("categorical", np.array(["a"] * 6, dtype=object))})
    assert p.n == 20
    assert p.numeric("x")[0].n == 20 and p.tokens("txt").missing >= 10
    assert p.categorical("cls").counts()["a"] >= 6 and p.reservoir.seen == 20


# ---------------------------------------------------------------------------------------------
# stored format: compact (format 2), and format 1 still loads

LEGACY = Path(__file__).parent / "data" / "profile_format1.json"


def legacy_batch(n: int, seed: int) -> dict[str, Column]:
    """The data of tests/data/profile_format1.json, written by driftloader at commit 98a89bb
    (format 1) from ``Profile.merged`` of two shards: ``legacy_batch(40, 0)``, ``(40, 1)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    x[rng.random(n) < 0.05] = np.nan
    x[:2] = [np.inf, -np.inf]
    words = np.array(["the cat", "a dog ran", "ünïcode text", None], dtype=object)
    return {  # in this order: each line draws from rng
        "x": Column("numeric", np.ma.masked_array(x, mask=rng.random(n) < 0.1)),
        "y": Column("numeric", np.ma.asarray(rng.integers(0, 5, n).astype(float))),
        "cls": Column("categorical", np.array(rng.choice(["a", "b", "c", None], n), dtype=object)),
        "wide": Column(
            "categorical", np.array([f"k{i}" for i in rng.integers(0, 20, n)], dtype=object)
        ),
        "txt": Column("tokens", words[rng.integers(0, 4, n)]),
    }


def test_a_format_1_profile_still_loads() -> None:
    text = LEGACY.read_text()
    old = Profile.from_json(text)
    fresh = Profile.merged(
        [Profile("legacy-fp", config=CONFIG).update(legacy_batch(40, i)) for i in range(2)]
    )
    assert json.loads(text)["format"] == 1 and old.config == CONFIG
    assert_equivalent(old, fresh)
    np.testing.assert_array_equal(old.reservoir.rows, fresh.reservoir.rows)
    np.testing.assert_array_equal(old.reservoir.priorities, fresh.reservoir.priorities)
    assert old.categorical("wide").counts() == fresh.categorical("wide").counts()
    # written again in today's format, it reads back the same
    again = Profile.from_json(old.to_json())
    assert json.loads(old.to_json())["format"] == 2
    assert_equivalent(again, old)  # (a frequent-items blob is not canonical: compare answers)
    assert again.categorical("wide").counts() == old.categorical("wide").counts()
    np.testing.assert_array_equal(again.reservoir.rows, old.reservoir.rows)
    assert_equivalent(Profile.merged([old, fresh]), Profile.merged([fresh, again]))


def test_stored_profile_is_at_most_8_kib_per_feature_reservoir_included() -> None:
    g = np.random.default_rng(4)
    batch = {f"v.{j}": Column("numeric", np.ma.asarray(g.standard_normal(1000))) for j in range(8)}
    batch["cls"] = Column("categorical", np.array(g.choice(["a", "b", "c"], 1000), dtype=object))
    p = Profile("fp").update(batch)  # default ProfileConfig
    assert len(p.to_json()) <= 8192 * len(p.kinds)
    assert "[[" not in p.to_json()  # no reservoir rows as JSON text


def test_reservoir_decodes_only_when_used() -> None:
    ref, shard = profile(make_batch(300, 1)), profile(make_batch(200, 2))
    loaded = Profile.from_json(shard.to_json())
    assert not loaded.reservoir.decoded
    from driftloader.drift import compare

    compare(loaded, ref, None)
    assert not loaded.reservoir.decoded and Profile.from_json(loaded.to_json()).n == 200
    np.testing.assert_array_equal(loaded.reservoir.rows, shard.reservoir.rows)
    assert loaded.reservoir.decoded


def test_a_corrupt_reservoir_payload_is_a_format_error() -> None:
    d = json.loads(profile(make_batch(30)).to_json())
    rows = d["reservoir"]["rows"]
    short = {**d, "reservoir": {**d["reservoir"], "rows": {**rows, "data": rows["data"][:-4]}}}
    with pytest.raises(ProfileFormatError, match="base64 text of"):  # caught when loading
        Profile.from_dict(short)
    bad = {**d, "reservoir": {**d["reservoir"], "rows": {**rows, "data": "%" * len(rows["data"])}}}
    loaded = Profile.from_dict(bad)  # the length fits: the payload is read on first use
    with pytest.raises(ProfileFormatError, match="reservoir"):
        loaded.reservoir.rows  # noqa: B018


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_vector_shard_profile_with_joint_projections_is_at_most_8_kib_per_feature(
    dtype: type,
) -> None:
    """20,000 samples of a 64-value .npy with the default featurizer (64 coordinates and 8
    joint projections): the joint columns are not in the reservoir (it was 8.6 KiB per feature
    with them), and the reservoir keeps float32 values, so a float64 field is no larger than a
    float32 one (it was 8.3 KiB per feature when the reservoir kept float64 values)."""
    rng = np.random.default_rng(5)
    featurizer = DefaultFeaturizer()
    p = Profile(featurizer.fingerprint)
    for _ in range(20):
        vectors = rng.standard_normal((1000, 64)).astype(dtype)
        p.update(
            featurizer([{"__key__": str(i), "x.npy": npy_bytes(v)} for i, v in enumerate(vectors)])
        )
    joint = [name for name in p.kinds if joint_name_parts(name) is not None]
    assert len(joint) == 8 and len(p.kinds) == 72
    assert p.reservoir_columns == sorted(f"x.npy[{j}]" for j in range(64))
    assert p.reservoir.width == 64
    assert len(p.to_json()) / len(p.kinds) <= 8192


JOINT_RESERVOIR = Path(__file__).parent / "data" / "profile_joint_reservoir.json"


def test_a_profile_stored_with_joint_columns_in_its_reservoir_loads_without_them() -> None:
    """tests/data/profile_joint_reservoir.json was written at commit 48a9a08, when the reservoir
    also held the joint projections: it loads with those columns dropped and merges with a
    profile of today's layout."""
    raw = json.loads(JOINT_RESERVOIR.read_text())
    old = Profile.from_json(JOINT_RESERVOIR.read_text())
    assert old.reservoir_columns == ["x.npy[0]", "x.npy[1]", "x.npy[2]"]
    assert old.reservoir.width == 3 and old.reservoir.seen == old.n == 30
    sorted_names = sorted(n for n, f in raw["features"].items() if f["kind"] == "numeric")
    full = sketch_from_dict(raw["reservoir"])
    keep = [sorted_names.index(c) for c in old.reservoir_columns]
    np.testing.assert_array_equal(old.reservoir.rows, full.rows[:, keep])
    np.testing.assert_array_equal(old.reservoir.priorities, full.priorities)
    again = Profile.from_json(old.to_json())
    np.testing.assert_array_equal(again.reservoir.rows, old.reservoir.rows)
    fresh = Profile("joint-fp", config=old.config).update(
        {
            **{f"x.npy[{j}]": Column("numeric", np.ma.asarray(np.ones(5) * j)) for j in range(3)},
            "joint:x.npy/dir0": Column("numeric", np.ma.asarray(np.zeros(5))),
            "joint:x.npy/dir1": Column("numeric", np.ma.asarray(np.zeros(5))),
            "cls": Column("categorical", np.array(["a"] * 5, dtype=object)),
        }
    )
    merged = Profile.merged([old, fresh])
    assert merged.n == 35 and merged.reservoir.seen == 35 and merged.reservoir.width == 3


def test_thumbnails_merge_like_sketches_and_round_trip() -> None:
    from driftloader.thumbnails import PER_FIELD, thumbnail

    def jpeg(level: int) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.full((40, 60, 3), level, dtype=np.uint8)).save(buf, "JPEG")
        return buf.getvalue()

    parts = []
    for s in range(3):
        p = profile(make_batch(20, s))
        p.thumbnails = {"jpg": [thumbnail(jpeg(40 * s + j)) for j in range(3)]}
        parts.append(p)
    ab_c = Profile.merged([Profile.merged(parts[:2]), parts[2]])
    a_bc = Profile.merged([parts[0], Profile.merged(parts[1:])])
    c_ba = Profile.merged([parts[2], parts[1], parts[0]])
    assert ab_c.thumbnails == a_bc.thumbnails == c_ba.thumbnails
    assert len(ab_c.thumbnails["jpg"]) == PER_FIELD
    assert Profile.from_json(ab_c.to_json()).thumbnails == ab_c.thumbnails
    assert "thumbnails" not in json.loads(profile(make_batch(5)).to_json())  # none, none stored
    bad = json.loads(ab_c.to_json())
    bad["thumbnails"] = {"jpg": ["not base64!"]}
    with pytest.raises(ProfileFormatError, match="thumbnail"):
        Profile.from_dict(bad)
