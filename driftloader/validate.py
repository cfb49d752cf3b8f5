"""Validation rules inferred from a reference profile, stored beside it as editable JSON.

Rules say what new data must look like, independently of statistical drift: the schema
(feature names and kinds), value ranges, a maximum missing / NaN / inf rate and the allowed
categories. They live at ``references/<name>.rules.json`` in the store, so a person can edit
them. Example::

    rules = infer_rules(store.get_reference("v1"))
    save_rules(store, "v1", rules)
    failures = check(store.get_profile(url, version), rules)   # [] when the shard passes
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from .catalog import CatalogRow
from .errors import DriftloaderError, NoShardsError, ProfileFormatError
from .executors import ExecutorSpec
from .features import joint_name_parts
from .profile import Profile
from .profiling import profile_shards
from .progress import active, track
from .sources import Shard, redact, shards_of, stat_shards
from .store import (
    ProfileStore,
    check_reference_name,
    recorded_featurizer,
    shard_key,
    unique_shards,
)
from .writebehind import WriteBehind

RULES_FORMAT = 1
_MAX_LISTED = 5


# ------------------------------------------------------------------------------ inference


def infer_rules(
    reference: Profile,
    *,
    margin: float = 0.25,
    quantile: float | None = None,
    missing_factor: float = 2.0,
    missing_slack: float = 0.01,
    max_outside_rate: float = 0.01,
) -> dict:
    """Rules from ``reference``: schema, ranges, missing rates and allowed categories.

    Ranges are the reference's ``[min, max]`` widened by ``margin`` times its width; with
    ``quantile`` (e.g. 0.001) they are the ``[q, 1 - q]`` quantiles widened the same way, and a
    shard may then have up to ``max_outside_rate`` of its values outside. The allowed missing rate
    is ``missing_factor`` times the reference's plus ``missing_slack``.
    """
    if not margin >= 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if quantile is not None and not 0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile!r}")
    features = {}
    for name, kind in sorted(reference.kinds.items()):
        rule: dict[str, Any] = {"kind": kind}
        rate = missing_rate(reference, name)
        rule["max_missing_rate"] = round(min(1.0, rate * missing_factor + missing_slack), 6)
        if kind == "numeric" and joint_name_parts(name) is None:  # projections: drift, no range
            rule.update(_numeric_range(reference, name, margin, quantile, max_outside_rate))
        elif kind == "categorical":
            rule.update(_categories(reference, name))
        features[name] = rule
    return {
        "format": RULES_FORMAT,
        "reference": reference.meta.get("reference"),
        "fingerprint": reference.fingerprint,
        "created": time.time(),
        "allow_new_features": False,
        "max_error_rate": 0.0,
        "features": features,
    }


def _numeric_range(
    ref: Profile, name: str, margin: float, quantile: float | None, outside: float
) -> dict:
    moments, quantiles = ref.numeric(name)
    if moments.count == 0:
        return {}
    if quantile is None:
        lo, hi = float(moments.min), float(moments.max)
    else:
        lo, hi = (float(v) for v in quantiles.quantile([quantile, 1 - quantile]))
    pad = margin * (hi - lo) if hi > lo else margin * max(abs(lo), 1.0)
    rule = {"min": lo - pad, "max": hi + pad}
    if quantile is not None:
        rule["max_outside_rate"] = outside
    return rule


def _categories(ref: Profile, name: str) -> dict:
    counts = ref.categorical(name)
    if not counts.exact:  # too many distinct values to list: no category rule
        return {}
    return {"allowed": sorted(counts.counts()), "max_unknown_rate": 0.0}


def missing_rate(profile: Profile, name: str) -> float:
    """Fraction of samples where feature ``name`` is missing, NaN or infinite."""
    kind = profile.kinds[name]
    if kind == "numeric":
        m, _ = profile.numeric(name)
        bad, n = m.missing + m.nan + m.posinf + m.neginf, m.n
    elif kind == "categorical":
        c = profile.categorical(name)
        bad, n = c.missing, c.n
    else:
        t = profile.tokens(name)
        bad, n = t.missing, t.n
    return bad / n if n else 0.0


# ---------------------------------------------------------------------------------- check


def check(profile: Profile, rules: dict) -> list[str]:
    """Human-readable failures of ``profile`` against ``rules``, each naming the feature."""
    features = _rule_features(rules)
    if profile.n == 0:
        return ["shard has no samples"]
    failures = _schema_failures(profile, rules, features)
    error_rate = profile.errors / (profile.n + profile.errors)
    if error_rate > float(rules.get("max_error_rate", 0.0)):
        failures.append(f"{profile.errors} samples failed to read or featurize")
    for name, rule in features.items():
        if profile.kinds.get(name) == rule.get("kind"):
            failures.extend(_feature_failures(profile, name, rule))
    return failures


def _rule_features(rules: dict) -> dict:
    features = rules.get("features") if isinstance(rules, dict) else None
    if not isinstance(features, dict):
        raise ProfileFormatError(f"validation rules need a 'features' object, got {rules!r:.80}")
    return features


def _schema_failures(profile: Profile, rules: dict, features: dict) -> list[str]:
    failures = []
    for name, rule in features.items():
        kind = profile.kinds.get(name)
        if kind is None:
            failures.append(f"feature {name!r} ({rule.get('kind')}) is missing")
        elif kind != rule.get("kind"):
            failures.append(f"feature {name!r} is {kind}, rules want {rule.get('kind')}")
    if not rules.get("allow_new_features", False):
        for name in sorted(set(profile.kinds) - set(features)):
            failures.append(f"feature {name!r} ({profile.kinds[name]}) is not in the rules")
    return failures


def _feature_failures(profile: Profile, name: str, rule: dict) -> list[str]:
    failures = []
    rate = missing_rate(profile, name)
    limit = rule.get("max_missing_rate")
    if limit is not None and rate > float(limit):
        failures.append(
            f"feature {name!r}: missing/NaN/inf rate {rate:.3f} exceeds {float(limit):.3f}"
        )
    if rule["kind"] == "numeric":
        failures.extend(_range_failures(profile, name, rule))
    elif rule["kind"] == "categorical" and rule.get("allowed") is not None:
        failures.extend(_category_failures(profile, name, rule))
    return failures


def _range_failures(profile: Profile, name: str, rule: dict) -> list[str]:
    moments, quantiles = profile.numeric(name)
    lo, hi = rule.get("min"), rule.get("max")
    if moments.count == 0 or (lo is None and hi is None):
        return []
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    if "max_outside_rate" in rule:
        below, below_hi = quantiles.cdf(np.array([lo, hi]))
        outside = float(below + 1.0 - below_hi)
        if outside > float(rule["max_outside_rate"]):
            return [f"feature {name!r}: {outside:.3f} of values outside [{lo:.4g}, {hi:.4g}]"]
        return []
    if moments.min < lo or moments.max > hi:
        return [
            f"feature {name!r}: values in [{moments.min:.4g}, {moments.max:.4g}] "
            f"outside the allowed [{lo:.4g}, {hi:.4g}]"
        ]
    return []


def _category_failures(profile: Profile, name: str, rule: dict) -> list[str]:
    counts = profile.categorical(name)
    allowed = set(rule["allowed"])
    unknown = {k: c for k, c in counts.counts().items() if k not in allowed}
    present = counts.present
    rate = (sum(unknown.values()) + counts.other) / present if present else 0.0
    if rate <= float(rule.get("max_unknown_rate", 0.0)):
        return []
    listed = ", ".join(repr(k) for k in sorted(unknown)[:_MAX_LISTED])
    return [f"feature {name!r}: {rate:.3f} of values are not allowed categories ({listed})"]


# ---------------------------------------------------------------------------------- store


def rules_path(store: ProfileStore, name: str) -> str:
    """Where the rules of reference ``name`` live: ``references/<name>.rules.json``."""
    return store.path("references", f"{check_reference_name(name)}.rules.json")


def save_rules(store: ProfileStore, name: str, rules: dict) -> str:
    """Write ``rules`` (indented JSON, for people to edit) beside reference ``name``."""
    _rule_features(rules)
    path = rules_path(store, name)
    store.write_json(path, _sorted(rules), indent=2)
    return path


def load_rules(store: ProfileStore, name: str) -> dict | None:
    """The stored rules of reference ``name``; None if there are none yet."""
    path = rules_path(store, name)
    try:
        rules = store.read_json(path)
        if rules is not None:
            _rule_features(rules)
    except ValueError as e:
        raise ProfileFormatError(f"rules {store.display(path)} are not valid: {e}") from e
    return rules


def _sorted(value: Any) -> Any:
    """``value`` with every object's keys sorted (rules files read best that way)."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def ensure_rules(store: ProfileStore, name: str, **infer_options: Any) -> dict:
    """The stored rules of ``name``, inferring them from the reference and saving them if absent."""
    rules = load_rules(store, name)
    if rules is None:
        rules = infer_rules(store.get_reference(name), **infer_options)
        rules["reference"] = name
        save_rules(store, name, rules)
    return rules


# --------------------------------------------------------------------------- validation

UNREADABLE = "shard could not be read"  # how a validation failure of an unreadable shard starts


@dataclass
class ShardValidation:
    """The result of validating one shard version."""

    url: str
    version: str | None
    n: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": redact(self.url),
            "version": self.version,
            "n": self.n,
            "passed": self.passed,
            "failures": list(self.failures),
        }


def validate_shards(
    urls: str | Sequence[str] | Sequence[Shard],
    store: ProfileStore,
    reference: str,
    *,
    storage_options: dict | None = None,
    workers: int = 1,
    record: bool = True,
    executor: ExecutorSpec = None,
) -> list[ShardValidation]:
    """Validate every shard of ``urls`` at its current version against reference's rules.

    Unprofiled shards are profiled first; a shard that cannot be read fails (it never stops
    the others), with the featurizer the reference recorded. Results go to the catalog as
    ``{"validation": failures, ...}``.
    """
    rules = ensure_rules(store, reference)
    featurizer = recorded_featurizer(store.get_reference(reference))
    now = time.time()  # before the stat, as a glob's listing is stamped: it may be that old
    shards = _stat(urls, storage_options)
    summary = profile_shards(
        [Shard(s.url, s.version, s.size, s.pinned, listed=now) for s in shards],  # stat'ed
        store,
        workers=workers,
        executor=executor,
        featurizer=featurizer,
        storage_options=storage_options,
        on_error="skip",
        progress=active(),
    )
    errors = dict(summary.failed)
    # the profiles read in batches (one ``cat`` a chunk), the rows written behind, many at
    # once: one at a time, 100k shards at 40 ms were ~3 hours of round trips
    profiles = chain.from_iterable(store.fetch_profile_chunks(shards, featurizer.fingerprint))
    writes = WriteBehind.for_batch()
    results = []
    for shard, profile in track(zip(shards, profiles), "validated", total=len(shards)):
        result = _validated(shard, profile, rules, errors)
        if record:
            writes.submit(shard.url, _record, store, reference, result)
        results.append(result)
    writes.flush()
    return results


def _stat(urls: Any, storage_options: dict | None) -> list[Shard]:
    return unique_shards(stat_shards(shards_of(urls, storage_options), storage_options))


def _validated(
    shard: Shard, profile: Profile | None, rules: dict, errors: dict[str, str]
) -> ShardValidation:
    if profile is None:
        error = errors.get(redact(shard.url), "no profile at its current version")
        return ShardValidation(shard.url, shard.version, 0, [f"{UNREADABLE}: {error}"])
    return ShardValidation(shard.url, shard.version, profile.n, check(profile, rules))


def _record(store: ProfileStore, reference: str, result: ShardValidation) -> None:
    store.record(
        CatalogRow(
            result.url,
            result.version,
            validation=list(result.failures),
            validation_reference=reference,
            valid=result.passed,
            validated=time.time(),
        )
    )


# -------------------------------------------------------------------------------- watching


@dataclass
class WatchSummary:
    """What ``watch`` did over all its passes."""

    passes: int = 0
    validated: int = 0
    failed: int = 0
    results: list[ShardValidation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        errors = f"; {len(self.errors)} passes failed" if self.errors else ""
        return (
            f"{self.passes} passes: {self.validated} shards validated, {self.failed} failed{errors}"
        )


def watch_pattern(prefix: str) -> str:
    """The glob that ``watch`` polls: ``prefix`` itself if it has wildcards, else ``*.tar`` in it."""
    if any(ch in prefix for ch in "*?["):
        return prefix
    return prefix.rstrip("/") + "/*.tar"


def pending_shards(
    prefix: str, store: ProfileStore, reference: str, storage_options: dict | None = None
) -> list[Shard]:
    """Shards under ``prefix`` whose current version has no validation against ``reference``."""
    try:
        shards = _stat(watch_pattern(prefix), storage_options)
    except NoShardsError:
        return []
    done = {
        (shard_key(r.url), r.version)
        for r in store.catalog()
        if r.validation_reference == reference and r.validation is not None
    }
    return [s for s in shards if (shard_key(s.url), s.version) not in done]


def watch(
    prefix: str,
    store: ProfileStore,
    reference: str,
    *,
    interval: float = 60.0,
    once: bool = False,
    storage_options: dict | None = None,
    on_result: Callable[[ShardValidation], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    max_passes: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchSummary:
    """Poll ``prefix`` and validate shards that are new or have a new version.

    Stops after one pass with ``once``, after ``max_passes``, or on Ctrl-C (KeyboardInterrupt
    ends the loop cleanly and the summary so far is returned). A failing shard is reported
    through ``on_result`` and counted; it never stops the loop. A pass that fails as a whole
    (storage unreachable, say) is counted in ``errors`` and reported through ``on_error``; the
    loop goes on (with ``once`` the error is raised).
    """
    if not isinstance(interval, (int, float)) or interval < 0:
        raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
    ensure_rules(store, reference)  # a missing reference fails now, not on every pass
    summary = WatchSummary()
    limit = 1 if once else max_passes
    try:
        while limit is None or summary.passes < limit:
            if summary.passes:
                sleep(interval)
            try:
                _watch_pass(prefix, store, reference, storage_options, summary, on_result)
            except (DriftloaderError, OSError) as e:
                if once:
                    raise
                summary.passes += 1
                summary.errors.append(str(e))
                if on_error is not None:
                    on_error(e)
    except KeyboardInterrupt:
        pass
    return summary


def _watch_pass(
    prefix: str,
    store: ProfileStore,
    reference: str,
    storage_options: dict | None,
    summary: WatchSummary,
    on_result: Callable[[ShardValidation], None] | None,
) -> None:
    todo = pending_shards(prefix, store, reference, storage_options)
    results = (
        validate_shards(todo, store, reference, storage_options=storage_options) if todo else []
    )
    summary.passes += 1
    for r in results:
        summary.validated += 1
        summary.failed += not r.passed
        summary.results.append(r)
        if on_result is not None:
            on_result(r)
