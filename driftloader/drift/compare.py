"""``compare``: a shard's profile against a reference profile, with multiple-testing control and
effect floors over the registered tests (registry.py).

A shard is flagged only when some test is significant after correction across *all* tests of
the shard (alpha split equally across features, then across each feature's tests) **and** that
test's effect size reaches its floor. Significance alone alarms on every
large shard (Evidently #50, alibi-detect #646); an effect threshold alone alarms on every small
one. Both together give: a 1,000-sample shard with a 0.25 sigma shift is flagged, a 50,000-sample
shard with a 0.05 sigma shift is not (``benchmarks/detection.py`` measures this).

Tests, per feature kind (every one is computed from the sketches, never from raw values):

* numeric (on finite values): ``ks`` Kolmogorov-Smirnov distance from the two quantile sketches,
  with both sketches' rank errors subtracted before the p-value (honest, as DataSketches does),
  effect Wasserstein-1 / reference std (its detail also carries PSI and Jensen-Shannon distance
  on reference-quantile bins); ``mean`` z-test from the exact moments, effect
  ``|mean shift| / reference std``; ``scale`` Brown-Forsythe-style test on the mean absolute
  deviation from the reference median (sketch error bound added to its variance), effect
  ``|log(spread ratio)|``. The moment tests carry the power on small shards: the honest sketch
  KS pays ~0.014 in critical distance for the rank errors.
* numeric, categorical and tokens: ``missing`` (and ``nan``, ``inf`` for numeric) rate change,
  exact conditional (hypergeometric) test; effect = absolute rate difference.
* categorical: ``chi2`` two-sample chi-square on the counts (rare categories merged, categories
  unseen in the reference pooled and reported); effect = Cohen's w, bias-corrected.
* tokens: ``chi2`` on hashed token-bucket counts (sparse buckets merged); effect = Cohen's w.

The shard ``score`` is ``max`` over tests of ``min(effect / floor, log(p) / log(cut))`` where
``cut`` is the largest raw p-value the correction rejects (``alpha / m`` for Bonferroni): it is
>= 1 exactly when the shard is drifted, grows with both evidence and effect, is 0 only when no
test shows anything, and is capped (finite, JSON-safe). Schema drift scores ``schema_score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from driftloader.drift.config import DriftConfig, FeatureDrift, ShardDrift
from driftloader.drift.registry import FEATURE_PAIRS, DriftTest, floor_of, tests_of
from driftloader.drift.stats import Evidence, adjust_pvalues, rejection_cut
from driftloader.errors import FingerprintMismatch
from driftloader.profile import Profile
from driftloader.store import preprocessing_of

_TINY_P = 1e-300  # p-values are clipped here so that scores stay finite


@dataclass
class _Outcome:
    """One registered test's evidence on one feature, and its weighted p-value (see _weigh)."""

    test: DriftTest
    evidence: Evidence
    pw: float = 1.0


def _run_tests(
    name: str, kind: str, shard: Profile, ref: Profile, cfg: DriftConfig
) -> list[_Outcome]:
    """Every registered test of ``kind`` that applies to feature ``name``, in registry order."""
    pair = FEATURE_PAIRS[kind](name, shard, ref, cfg)
    out = []
    for test in tests_of(kind):
        evidence = test.run(pair, cfg)
        if evidence is not None:
            out.append(_Outcome(test, evidence))
    return out


def _schema(profile: Profile, reference: Profile) -> dict[str, list[str]]:
    """Features missing from the shard, new in it, or of another kind."""
    mine, ref = set(profile.kinds), set(reference.kinds)
    kind = sorted(n for n in mine & ref if profile.kinds[n] != reference.kinds[n])
    out = {"missing": sorted(ref - mine), "new": sorted(mine - ref), "kind": kind}
    return {k: v for k, v in out.items() if v}


def _test_score(effect: float, floor: float, p: float, cut: float, cfg: DriftConfig) -> float:
    """min(effect / floor, log p / log cut), capped: >= 1 iff both criteria pass.

    Both ratios are continuous (the second is 0 at p = 1), so the score ranks shards smoothly
    below the threshold too.
    """
    sig = math.log(max(p, _TINY_P)) / math.log(cut)
    return float(min(effect / floor if math.isfinite(effect) else math.inf, sig, cfg.score_cap))


def _feature_drift(
    name: str,
    outcomes: list[_Outcome],
    p_adj: list[float],
    cut: float,
    cfg: DriftConfig,
    floors: dict[str, float],
) -> FeatureDrift:
    """Summarise the tests of one feature; the deciding test is the one with the top score.

    ``floors`` is ``cfg``'s floor of each metric.
    """
    rows, best = {}, None
    for o, pa in zip(outcomes, p_adj, strict=True):
        ev, metric = o.evidence, o.test.metric
        floor = floors[metric]
        score = _test_score(ev.effect, floor, o.pw, cut, cfg) if ev.testable else 0.0
        drifted = score >= 1.0
        rows[metric] = {
            "value": ev.value,
            "effect": ev.effect,
            "floor": floor,
            "p_value": ev.p,
            "p_weighted": o.pw,
            "p_adjusted": float(pa),
            "tested": ev.testable,
            "drifted": drifted,
            "score": score,
            **ev.detail,
        }
        if best is None or score > best[0]:
            best = (score, o, float(pa), drifted)
    score, o, pa, drifted = best  # type: ignore[misc]
    ev = o.evidence
    return FeatureDrift(
        name, o.test.kind, o.test.metric, ev.value, ev.effect, pa, drifted, {"tests": rows}, score
    )


def _schema_drift(
    schema: dict[str, list[str]], cfg: DriftConfig, profile: Profile, reference: Profile
) -> list[FeatureDrift]:
    """One drifted entry per feature missing, new or of another kind (kind as in the shard)."""
    out = []
    for change, names in schema.items():
        for name in names:
            kind = profile.kinds.get(name) or reference.kinds[name]
            detail = {"change": change, "reference_kind": reference.kinds.get(name)}
            out.append(
                FeatureDrift(name, kind, "schema", 1.0, 1.0, 0.0, True, detail, cfg.schema_score)
            )
    return out


def _metadata_drift(
    profile: Profile, reference: Profile, cfg: DriftConfig
) -> tuple[list[FeatureDrift], dict[str, str]]:
    """Drifted entries (kind "metadata") for a declared source / preprocessing fingerprint that
    none of the reference's shards had. Undeclared (no metadata) or unrecorded is not drift."""
    meta = profile.meta.get("metadata")
    if not cfg.metadata or not isinstance(meta, dict):
        return [], {}
    declared = {
        "source": profile.source if "source" in meta else None,
        "preprocessing": preprocessing_of(profile),
    }
    recorded = {
        "source": reference.meta.get("sources"),
        "preprocessing": reference.meta.get("preprocessing"),
    }
    out, changed = [], {}
    for metric, value in declared.items():
        known = recorded[metric]
        if value is None or not isinstance(known, list) or not known or value in known:
            continue
        changed[metric] = value
        detail = {"shard": value, "reference": list(known)}
        out.append(
            FeatureDrift(
                f"metadata.{metric}",
                "metadata",
                metric,
                1.0,
                1.0,
                0.0,
                True,
                detail,
                cfg.schema_score,
            )
        )
    return out, changed


def _weigh(per_feature: list[list[_Outcome]]) -> list[_Outcome]:
    """Set each test's weighted p-value ``pw = p * F * k / m`` and return all tests, flattened.

    The family's alpha is split equally across the F features with a testable test, then across
    the k testable tests of each feature (weighted Bonferroni / BH, weights averaging 1): a
    categorical or token feature with one real test gets alpha / F, as a per-feature exact test
    would, instead of paying for the three tests of every numeric feature.
    """
    counts = [sum(o.evidence.testable for o in tests) for tests in per_feature]
    n_features, m = sum(k > 0 for k in counts), sum(counts)
    for tests, k in zip(per_feature, counts, strict=True):
        for o in tests:
            ev = o.evidence
            o.pw = min(ev.p * n_features * k / m, 1.0) if ev.testable else 1.0
    return [o for tests in per_feature for o in tests]


def compare(profile: Profile, reference: Profile, config: DriftConfig | None = None) -> ShardDrift:
    """Compare a shard's profile with a reference profile.

    Raises ``FingerprintMismatch`` when the two were featurized differently. Features missing
    from the shard or new in it are schema drift (reported, and the shard is drifted). A shard
    whose metadata declares a source or preprocessing fingerprint the reference never saw is
    metadata drift (``cfg.metadata``; a shard without metadata is not flagged for it).
    """
    cfg = config or DriftConfig()
    if profile.fingerprint != reference.fingerprint:
        raise FingerprintMismatch(
            f"shard {profile.url!r} was featurized with {profile.fingerprint!r} but reference with "
            f"{reference.fingerprint!r}: profile the shard with the reference's featurizer "
            "(or rebuild the reference) before comparing"
        )
    schema = _schema(profile, reference)
    common = sorted(
        n for n in set(profile.kinds) & set(reference.kinds) if n not in schema.get("kind", ())
    )
    per_feature = [_run_tests(n, profile.kinds[n], profile, reference, cfg) for n in common]
    flat = _weigh(per_feature)
    testable = np.array([o.evidence.testable for o in flat], dtype=bool)
    weighted = [o.pw for o in flat if o.evidence.testable]
    p_adj = np.ones(len(flat))
    p_adj[testable] = adjust_pvalues(weighted, cfg.correction)
    cut = rejection_cut(weighted, cfg.correction, cfg.alpha)
    floors = {metric: floor_of(metric, cfg) for metric in {o.test.metric for o in flat}}
    features, start, adjusted = [], 0, p_adj.tolist()
    for name, tests in zip(common, per_feature, strict=True):
        if not tests:  # a feature kind whose every test was inapplicable
            continue
        features.append(
            _feature_drift(name, tests, adjusted[start : start + len(tests)], cut, cfg, floors)
        )
        start += len(tests)
    features += _schema_drift(schema, cfg, profile, reference)
    meta_features, meta_changed = _metadata_drift(profile, reference, cfg)
    features += meta_features
    report: dict = dict(schema)
    if meta_changed:
        report["metadata"] = meta_changed
    score = max((f.score for f in features), default=0.0)
    drifted = bool(report) or any(f.drifted for f in features)
    return ShardDrift(profile.url, profile.version, profile.n, drifted, score, features, report)
