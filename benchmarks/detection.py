"""Measure drift detection at default settings against exact raw-value tests on the same shards.

Synthetic shards have 16 numeric features of varied shapes (normal, skewed, heavy-tailed,
discrete, bimodal), a 10-class categorical and a text field (Zipf words over a 2,000-word
vocabulary, ~20 words per document) featurized into ``txt.len``, ``txt.words`` and the hashed
token feature ``txt.tokens``. Profiles are built with the real ``Profile`` and sketches; the
reference is the merge of ``--ref-shards`` in-distribution shards. Every family is also tested
with the exact method (scipy ``ks_2samp`` per numeric feature, chi-square per categorical and on
the raw word counts, Bonferroni over features) on the raw values of the same shards.

Run ``python benchmarks/detection.py`` (defaults: 200 clean shards, 100 per drift family);
prints a markdown table and writes ``benchmarks/results/detection.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from driftloader.drift import DriftConfig, compare, effective_sample_size, importance_weights
from driftloader.features import Column, FeatureBatch
from driftloader.policy import BATCH, systematic_resample
from driftloader.profile import Profile

RESULTS = Path(__file__).parent / "results" / "detection.md"
FINGERPRINT = "benchmark-detection"
VOCAB = 2000
ZIPF = 1.0 / np.arange(1, VOCAB + 1)
ZIPF /= ZIPF.sum()
WORDS = np.array([f"w{i:04d}" for i in range(VOCAB)], dtype=object)
WORD_LEN = np.array([len(w) for w in WORDS])
BOOSTED = np.arange(9, 100, 10)  # ten words, frequency ranks 10, 20, ..., 100
CLASSES = np.array([f"c{i}" for i in range(10)], dtype=object)
ALPHA = 0.01

Sampler = Callable[[np.random.Generator, int], np.ndarray]
NUMERIC: dict[str, Sampler] = {
    "f00_normal": lambda g, n: g.standard_normal(n),
    "f01_normal_5_2": lambda g, n: g.normal(5.0, 2.0, n),
    "f02_lognormal_05": lambda g, n: g.lognormal(0.0, 0.5, n),
    "f03_lognormal_1": lambda g, n: g.lognormal(0.0, 1.0, n),
    "f04_exponential": lambda g, n: g.exponential(1.0, n),
    "f05_uniform": lambda g, n: g.random(n),
    "f06_student_t5": lambda g, n: g.standard_t(5, n),
    "f07_gamma2": lambda g, n: g.gamma(2.0, 1.0, n),
    "f08_poisson3": lambda g, n: g.poisson(3.0, n).astype(np.float64),
    "f09_binomial": lambda g, n: g.binomial(10, 0.3, n).astype(np.float64),
    "f10_beta": lambda g, n: g.beta(2.0, 5.0, n),
    "f11_bimodal": lambda g, n: g.standard_normal(n) + np.where(g.random(n) < 0.5, -2.0, 2.0),
    "f12_normal_1e3": lambda g, n: g.normal(1000.0, 10.0, n),
    "f13_chisq3": lambda g, n: g.chisquare(3, n),
    "f14_laplace": lambda g, n: g.laplace(0.0, 1.0, n),
    "f15_logistic": lambda g, n: g.logistic(0.0, 1.0, n),
}
NAMES = list(NUMERIC)


@dataclass
class Shard:
    """One synthetic shard: its feature batch, raw numeric values, classes and word counts."""

    batch: FeatureBatch
    numeric: dict[str, np.ndarray]
    classes: np.ndarray
    word_counts: np.ndarray
    target: str | None = None


def _population_moments(seed: int = 12345) -> dict[str, tuple[float, float]]:
    """Mean and std of each numeric distribution from a large sample (the sigma of a shift)."""
    g = np.random.default_rng(seed)
    return {
        k: (float(v.mean()), float(v.std()))
        for k, v in ((k, s(g, 400_000)) for k, s in NUMERIC.items())
    }


POP = _population_moments()


def _texts(
    g: np.random.Generator, n: int, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n documents of 1 + Poisson(19) Zipf words: (texts, char lengths, word counts, word-id counts)."""
    lengths = 1 + g.poisson(19.0, n)
    ids = g.choice(VOCAB, size=int(lengths.sum()), p=probs)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    chars = np.add.reduceat(WORD_LEN[ids], starts) + lengths - 1
    texts = np.array([" ".join(doc) for doc in np.split(WORDS[ids], starts[1:])], dtype=object)
    return (
        texts,
        chars.astype(np.float64),
        lengths.astype(np.float64),
        np.bincount(ids, minlength=VOCAB),
    )


def make_shard(
    g: np.random.Generator, n: int, family: str = "clean", index: int = 0, shift: float = 0.25
) -> Shard:
    """A shard drawn from the reference distribution, or drifted as ``family`` says."""
    target = (
        NAMES[index % len(NAMES)] if family in ("mean", "spread", "nan", "small_shift") else None
    )
    numeric = {k: s(g, n) for k, s in NUMERIC.items()}
    if target is not None:
        mean, sd = POP[target]
        x = numeric[target]
        if family in ("mean", "small_shift"):
            numeric[target] = x + shift * sd
        elif family == "spread":
            numeric[target] = mean + 1.3 * (x - mean)
        else:  # nan
            numeric[target] = np.where(g.random(n) < 0.01, np.nan, x)
    class_p = np.full(10, 0.1)
    if family == "categorical":
        class_p = np.full(10, 0.83 / 9)
        class_p[0] = 0.17
        target = "cls"
    probs = ZIPF
    if family == "tokens":
        probs = ZIPF.copy()
        probs[BOOSTED] *= 2
        probs /= probs.sum()
        target = "txt.tokens"
    classes = CLASSES[g.choice(10, size=n, p=class_p)]
    texts, chars, words, word_counts = _texts(g, n, probs)
    batch = {k: Column("numeric", np.ma.masked_array(v)) for k, v in numeric.items()}
    batch["cls"] = Column("categorical", classes)
    batch["txt.len"] = Column("numeric", np.ma.masked_array(chars))
    batch["txt.words"] = Column("numeric", np.ma.masked_array(words))
    batch["txt.tokens"] = Column("tokens", texts)
    numeric = {**numeric, "txt.len": chars, "txt.words": words}
    return Shard(batch, numeric, classes, word_counts, target)


def profile_of(shard: Shard, url: str) -> Profile:
    """The real profile of a shard, built in batches of 256 samples as the loader would."""
    p = Profile(FINGERPRINT, url=url, version="1")
    n = len(shard.classes)
    for start in range(0, n, 256):
        sl = slice(start, min(start + 256, n))
        p.update({k: Column(c.kind, c.values[sl]) for k, c in shard.batch.items()})
    return p


# ---------------------------------------------------------------------------------------------
# exact raw-value method


def _chi2_pooled(s: np.ndarray, r: np.ndarray) -> float:
    """p-value of the 2 x K contingency chi-square, cells with < 5 expected shard counts pooled."""
    share = s.sum() / (s.sum() + r.sum())
    keep = (s + r) * share >= 5
    table = np.array([np.append(s[keep], s[~keep].sum()), np.append(r[keep], r[~keep].sum())])
    table = table[:, table.sum(axis=0) > 0]
    return float(stats.chi2_contingency(table, correction=False)[1])


def exact_flag(shard: Shard, ref: Shard) -> bool:
    """ks_2samp per numeric feature (NaN dropped), chi-square on classes and on raw word counts;
    Bonferroni over features at ALPHA."""
    ps = []
    for k, x in shard.numeric.items():
        y = ref.numeric[k]
        ps.append(stats.ks_2samp(x[np.isfinite(x)], y[np.isfinite(y)]).pvalue)
    s_cls = (shard.classes[:, None] == CLASSES[None, :]).sum(axis=0)
    r_cls = (ref.classes[:, None] == CLASSES[None, :]).sum(axis=0)
    ps.append(_chi2_pooled(s_cls, r_cls))
    ps.append(_chi2_pooled(shard.word_counts, ref.word_counts))
    return bool(min(ps) * len(ps) <= ALPHA)


def concat(shards: list[Shard]) -> Shard:
    """The raw reference sample: all reference shards' raw values together."""
    return Shard(
        {},
        {k: np.concatenate([s.numeric[k] for s in shards]) for k in shards[0].numeric},
        np.concatenate([s.classes for s in shards]),
        np.sum([s.word_counts for s in shards], axis=0),
    )


# ---------------------------------------------------------------------------------------------
# families


FAMILIES = {
    "clean": ("no drift (false alarms)", 1000),
    "mean": ("0.25 sigma mean shift, one of 16 numeric", 1000),
    "spread": ("x1.3 spread, one of 16 numeric", 1000),
    "categorical": ("one class 10% -> 17%", 1000),
    "nan": ("1% NaN in one numeric (ref has none)", 1000),
    "tokens": ("ten words x2 frequency (text)", 1000),
    "small_shift": ("0.05 sigma shift, 50,000-sample shards", 50_000),
}


def run_family(
    family: str, count: int, ref_profile: Profile, ref_raw: Shard, seed: int, cfg: DriftConfig
) -> dict:
    """Flag rates of driftloader and of the exact method on ``count`` shards of ``family``."""
    n = FAMILIES[family][1]
    shift = 0.05 if family == "small_shift" else 0.25
    flagged = exact = top_ok = 0
    scores = []
    for i in range(count):
        g = np.random.default_rng([seed, 2 + list(FAMILIES).index(family), i])
        shard = make_shard(g, n, family, i, shift)
        result = compare(profile_of(shard, f"{family}-{i}"), ref_profile, cfg)
        flagged += result.drifted
        scores.append(result.score)
        top_ok += bool(result.drifted and shard.target and result.top(1)[0].name == shard.target)
        exact += exact_flag(shard, ref_raw)
    return {
        "flagged": flagged / count,
        "exact": exact / count,
        "top": top_ok / max(flagged, 1),
        "median_score": float(np.median(scores)),
    }


def reweighting_check(ref_profile: Profile, seed: int, count: int) -> dict:
    """0.5 sigma shift of f00_normal at n=1000: weighted mean error (in sigma) and ESS."""
    errors, resampled, ess = [], [], []
    mean, sd = POP["f00_normal"]
    for i in range(count):
        g = np.random.default_rng([seed, 999, i])
        shard = make_shard(g, 1000, "mean", 0, shift=0.5)
        prof = profile_of(shard, f"reweight-{i}")
        result = compare(prof, ref_profile)
        w = importance_weights(shard.batch, prof, ref_profile, result)
        x = shard.numeric["f00_normal"]
        errors.append(abs(float((w * x).sum() / w.sum()) - mean) / sd)
        # policy="resample": each batch of 256 redrawn in proportion to its weights
        drawn = [
            x[start : start + BATCH][systematic_resample(w[start : start + BATCH], g)]
            for start in range(0, x.size, BATCH)
        ]
        resampled.append(abs(float(np.concatenate(drawn).mean()) - mean) / sd)
        ess.append(effective_sample_size(w))
    e, r = np.array(errors), np.array(resampled)
    return {
        "count": count,
        "mean_err": float(e.mean()),
        "max_err": float(e.max()),
        "within": float((e <= 0.05).mean()),
        "resampled_mean_err": float(r.mean()),
        "resampled_max_err": float(r.max()),
        "ess": float(np.mean(ess)),
    }


def text_reweighting_check(ref_profile: Profile, seed: int, count: int) -> dict:
    """Ten words at twice their frequency, n=1000: the share of those words among all words,
    raw and weighted, against the reference distribution's; and the ESS."""
    boosted = set(WORDS[BOOSTED].tolist())
    expected = float(ZIPF[BOOSTED].sum())
    raw, weighted, ess = [], [], []
    for i in range(count):
        shard = make_shard(np.random.default_rng([seed, 998, i]), 1000, "tokens")
        prof = profile_of(shard, f"text-reweight-{i}")
        w = importance_weights(shard.batch, prof, ref_profile, compare(prof, ref_profile))
        docs = [text.split() for text in shard.batch["txt.tokens"].values]
        hits = np.array([sum(word in boosted for word in doc) for doc in docs], dtype=np.float64)
        words = np.array([len(doc) for doc in docs], dtype=np.float64)
        raw.append(hits.sum() / words.sum())
        weighted.append((w * hits).sum() / (w * words).sum())
        ess.append(effective_sample_size(w))
    removed = 1 - (np.array(weighted) - expected) / (np.array(raw) - expected)
    return {
        "count": count,
        "expected": expected,
        "raw": float(np.mean(raw)),
        "weighted": float(np.mean(weighted)),
        "removed": float(np.mean(removed)),
        "worst_removed": float(removed.min()),
        "ess": float(np.mean(ess)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-shards", type=int, default=20)
    parser.add_argument("--clean", type=int, default=200, help="in-distribution shards")
    parser.add_argument("--per-family", type=int, default=100, help="shards per drift family")
    parser.add_argument("--large", type=int, default=10, help="50,000-sample shards")
    parser.add_argument("--reweight", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--correction", default="bonferroni")
    args = parser.parse_args()
    cfg = DriftConfig(correction=args.correction)
    t0 = time.perf_counter()
    ref_shards = [
        make_shard(np.random.default_rng([args.seed, 1, i]), 1000) for i in range(args.ref_shards)
    ]
    ref_profile = Profile.merged(profile_of(s, f"ref-{i}") for i, s in enumerate(ref_shards))
    ref_raw = concat(ref_shards)
    rows = []
    for family, (label, n) in FAMILIES.items():
        count = {"clean": args.clean, "small_shift": args.large}.get(family, args.per_family)
        t = time.perf_counter()
        r = run_family(family, count, ref_profile, ref_raw, args.seed, cfg)
        rows.append((family, label, n, count, r))
        print(f"{family}: {r} ({time.perf_counter() - t:.1f}s)", flush=True)
    rw = reweighting_check(ref_profile, args.seed, args.reweight)
    tw = text_reweighting_check(ref_profile, args.seed, args.reweight)
    write_table(rows, rw, tw, args, time.perf_counter() - t0)


def write_table(rows: list, rw: dict, tw: dict, args: argparse.Namespace, elapsed: float) -> None:
    lines = [
        f"# Drift detection at default settings (reference: {args.ref_shards} x 1,000 samples; "
        f"correction={args.correction}, alpha={ALPHA})",
        "",
        "| family | shard size | n shards | driftloader flagged | exact raw-value tests flagged | top feature right | median score |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, label, n, count, r in rows:
        top = (
            f"{r['top']:.0%}"
            if label.startswith(("0.25", "x1.3", "one class", "1% NaN", "ten words"))
            else "-"
        )
        lines.append(
            f"| {label} | {n:,} | {count} | {r['flagged']:.1%} | {r['exact']:.1%} | {top} | {r['median_score']:.2f} |"
        )
    lines += [
        "",
        f"Reweighting (0.5 sigma shift of a normal feature, n=1,000, {rw['count']} shards): "
        f"|weighted mean - reference mean| / sigma: mean {rw['mean_err']:.3f}, max {rw['max_err']:.3f}, "
        f"within 0.05 sigma: {rw['within']:.0%}; mean effective sample size {rw['ess']:.0f}. "
        f'Resampled instead (policy="resample", batches of {BATCH} redrawn): mean '
        f"{rw['resampled_mean_err']:.3f}, max {rw['resampled_max_err']:.3f}.",
        "",
        f"Reweighting text (ten words at x2 frequency, n=1,000, {tw['count']} shards): share of "
        f"those words {tw['raw']:.2%} raw, {tw['weighted']:.2%} weighted, {tw['expected']:.2%} in "
        f"the reference distribution: {tw['removed']:.0%} of the excess removed (worst shard "
        f"{tw['worst_removed']:.0%}); mean effective sample size {tw['ess']:.0f}.",
        "",
        "Exact method: scipy `ks_2samp` per numeric feature (NaN dropped: it has no missing-rate test), "
        "chi-square on the class counts and on the raw (unhashed) word counts, Bonferroni over the "
        f"{len(NAMES) + 4} features, on the raw values of the same shards and the raw reference sample.",
        f"Runtime {elapsed:.0f} s.",
    ]
    text = "\n".join(lines) + "\n" + kept_sections()
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


KEPT = "\n## Images and joint drift"  # measured by benchmarks/images.py and joint.py


def kept_sections() -> str:
    """The sections of the results file this script does not measure (kept as they are)."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    at = old.find(KEPT)
    return old[at:] if at >= 0 else ""


if __name__ == "__main__":
    main()
