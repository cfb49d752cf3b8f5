"""FeatureSpec as JSON: to_json/from_json round trips every option and keeps the fingerprint;
a built-in featurizer gives its spec, and featurizer_from_spec rebuilds it from what a profile
or reference records; joint options (seed, k, scales) are part of the fingerprint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from driftloader.features import (
    CallableFeaturizer,
    DefaultFeaturizer,
    FeatureSpec,
    JointOptions,
    SpecFeaturizer,
    featurizer_from_spec,
    joint_labels,
    joint_name_parts,
    joint_scales,
)
from driftloader.profile import Profile

SPECS = [
    FeatureSpec({"x.npy": "vector", "cls": "categorical", "json.size": "numeric"}),
    FeatureSpec({"jpg": "image"}, image_size=64, decode_images=True),
    FeatureSpec(None, max_vector=8, max_keys=16, joint=None),
    FeatureSpec(None, fields=["x.npy", "cls"], joint={"k": 3, "seed": 7, "scales": {"x.npy": [2]}}),
    FeatureSpec(None, joint={"numeric": ["json.a", "json.b"], "scales": {"json.a": 3.0}}),
]


@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
def test_json_round_trip_keeps_every_option_and_the_fingerprint(spec: FeatureSpec) -> None:
    text = spec.to_json()
    again = FeatureSpec.from_json(text)
    assert again.to_dict() == spec.to_dict() == json.loads(text)
    assert again.fingerprint == spec.fingerprint
    rebuilt = featurizer_from_spec(json.loads(text))
    assert rebuilt.fingerprint == spec.fingerprint
    assert featurizer_from_spec(text).fingerprint == spec.fingerprint


def test_a_featurizer_gives_the_spec_that_rebuilds_it() -> None:
    for featurizer in (
        DefaultFeaturizer(),
        DefaultFeaturizer(fields=["cls"], decode_images=False, joint={"k": 2}),
        SpecFeaturizer(SPECS[0]),
    ):
        recorded = json.loads(json.dumps(featurizer.spec.to_dict()))  # as a profile stores it
        assert featurizer_from_spec(recorded).fingerprint == featurizer.fingerprint
    assert FeatureSpec(None).fingerprint == DefaultFeaturizer().fingerprint  # CLI default
    assert CallableFeaturizer(lambda s: {}).spec is None  # code: not JSON
    with_transform = FeatureSpec({"cls": "categorical"}, {"cls": str.upper})
    assert with_transform.featurizer().spec is None
    with pytest.raises(ValueError, match="transforms"):
        with_transform.to_json()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"feature": {}}', "unknown feature spec keys"),
        ('{"features": {"x.npy": "blob"}}', "unknown kind"),
        ('{"images": {"decode": true, "colour": 1}}', "images"),
        ('{"joint": {"k": -1}}', "joint k"),
        ('{"joint": {"numeric": ["json.a"]}}', "at least two"),
        ('{"joint": {"scales": {"x.npy": [0]}}}', "positive"),
        ('{"max_keys": 0}', "max_keys"),
        ('{"features": {"cls": "categorical"}, "fields": ["cls"]}', "either"),
    ],
)
def test_bad_specs_raise_value_error_naming_the_problem(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureSpec.from_json(text)


def test_joint_seed_k_and_scales_change_the_projections_and_names_parse() -> None:
    rng = np.random.default_rng(0)
    samples = [{"__key__": str(i), "x.npy": rng.standard_normal(3)} for i in range(20)]
    a = DefaultFeaturizer(joint={"k": 3})(samples)
    b = DefaultFeaturizer(joint={"k": 3, "seed": 1})(samples)
    c = DefaultFeaturizer(joint={"k": 3, "scales": {"x.npy": [1.0, 10.0, 1.0]}})(samples)
    assert sorted(joint_name_parts(n) for n in a if n.startswith("joint:")) == [
        ("x.npy", 0),
        ("x.npy", 1),
        ("x.npy", 2),
    ]
    assert joint_name_parts("x.npy[3]") is None
    names = ["joint:x.npy/dir7", "x.npy[0]", "joint:x.npy/dir3", "joint:numeric/dir1"]
    assert joint_labels(names) == ["joint: x.npy (directions 3, 7)", "joint: numeric (direction 1)"]
    dirs = JointOptions(k=3).directions("x.npy", 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0)
    x = np.stack([s["x.npy"] for s in samples])
    np.testing.assert_allclose(a["joint:x.npy/dir1"].values, x @ dirs[1])
    assert not np.allclose(a["joint:x.npy/dir0"].values, b["joint:x.npy/dir0"].values)
    scaled = x / np.array([1.0, 10.0, 1.0])
    np.testing.assert_allclose(c["joint:x.npy/dir0"].values, scaled @ dirs[0])


def test_joint_projection_is_missing_when_a_coordinate_is() -> None:
    samples = [
        {"__key__": "a", "x.npy": np.array([1.0, 2.0])},
        {"__key__": "b", "x.npy": np.array([1.0, np.nan])},
        {"__key__": "c"},
    ]
    batch = DefaultFeaturizer(joint={"k": 2})(samples)
    assert batch["joint:x.npy/dir0"].values.mask.tolist() == [False, True, True]


def test_joint_scales_come_from_a_reference_profile() -> None:
    rng = np.random.default_rng(1)
    featurizer = DefaultFeaturizer(joint=None)
    batch = featurizer(
        [{"__key__": str(i), "x.npy": rng.normal(0, [1.0, 5.0])} for i in range(500)]
    )
    reference = Profile(featurizer.fingerprint).update(batch)
    scales = joint_scales(reference, ["x.npy[0]", "x.npy[1]"])
    assert scales["x.npy[0]"] == pytest.approx(1.0, rel=0.15)
    assert scales["x.npy[1]"] == pytest.approx(5.0, rel=0.15)
    options = JointOptions(scales={"x.npy": list(scales.values())})
    assert DefaultFeaturizer(joint=options).fingerprint != DefaultFeaturizer().fingerprint


def test_the_readme_spec_snippet_runs() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (code,) = [
        s for s in re.findall(r"```python\n(.*?)```", readme, re.S) if "FeatureSpec.from_json" in s
    ]
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["featurizer"].fingerprint == namespace["spec"].fingerprint


def test_nan_in_one_coordinate_is_reported_on_that_coordinate_not_on_its_projections() -> None:
    from driftloader.drift import compare

    rng = np.random.default_rng(3)
    featurizer = DefaultFeaturizer()

    def profile(nan_share: float) -> Profile:
        x = rng.normal(size=(1000, 8))
        x[rng.random(1000) < nan_share, 5] = np.nan
        samples = [{"__key__": str(i), "x.npy": row} for i, row in enumerate(x)]
        return Profile(featurizer.fingerprint).update(featurizer(samples))

    result = compare(profile(0.3), profile(0.0))
    flagged = [(f.name, f.metric) for f in result.features if f.drifted]
    assert result.drifted and result.top(1)[0].name == "x.npy[5]"
    assert all(not name.startswith("joint:") for name, _ in flagged), flagged
