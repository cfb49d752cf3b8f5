"""The shard gate: profile shards as they stream, compare them with a reference, act on drift.

Policies:

* ``"monitor"``: pass every sample, record every shard's drift.
* ``"skip"``: a shard whose stored profile (at its current version) is drifted is skipped before
  any byte of it is read; a shard with no stored profile is read through a probe window
  (``probe`` samples, buffered, not yet yielded) and dropped as soon as the probe shows drift
  (the probe's profile is stored apart, so later epochs and runs skip the shard unread);
  otherwise it is passed on, re-checked at its end, and its profile stored, so that the next
  epoch (any rank, any run) decides before reading.
* ``"reweight"``: every sample carries ``"__weight__"``, an estimate of p_ref(x) / p_shard(x)
  from the sketches of the drifted features (the stored profile's, else the probe window's),
  clipped, mean 1 per batch; undrifted shards get 1.0.
* ``"resample"``: the same weights, applied by drawing instead of by the loss: each batch of a
  drifted shard is replaced by as many samples drawn in proportion to their weights
  (systematic resampling: a sample of weight w appears floor(w) or ceil(w) times), so the
  training loop needs no change. Counts per shard are kept; repeated samples are copies of the
  same dict (same ``__key__``). The draws depend on the dataset's seed, the epoch and the shard,
  so they differ between epochs, agree across ranks, and replay exactly on resume. A shard
  without a stored profile is weighed from its probe window's profile (exact up to the KLL
  sketches' k = 400 samples, so every run weighs it alike; see docs/distributed.md).

Decisions made from stored profiles depend only on (profile, reference, config), so every
worker and rank takes the same ones. Every decision goes to ``report()`` and the store's catalog.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from .drift import DriftConfig, ShardDrift, compare, effective_sample_size, importance_weights
from .errors import FingerprintMismatch
from .features import featurizer_from
from .profile import Profile
from .profiling import Metadata, ShardProfiler
from .sources import Shard, redact
from .store import ProfileStore, shard_key

POLICIES = ("monitor", "skip", "reweight", "resample")
WEIGHTED = ("reweight", "resample")
BATCH = 256


def _as_store(store: Any, storage_options: dict | None) -> ProfileStore | None:
    if store is None or isinstance(store, ProfileStore):
        return store
    return ProfileStore(store, storage_options)


class ShardGate:
    """Decides per shard (before and while reading) and records the decisions.

    Example::

        gate = ShardGate(store="s3://bucket/drift", reference="v1", policy="skip")
        if gate.before(shard):
            samples = gate.observe(shard, read_shard(shard))
    """

    def __init__(
        self,
        store: Any = None,
        reference: str | None = None,
        policy: str = "monitor",
        featurizer: Any = None,
        config: DriftConfig | None = None,
        probe: int = 256,
        storage_options: dict | None = None,
        clip: tuple[float, float] = (0.1, 10.0),
        metadata: Metadata = None,
        sidecar: bool = True,
        seed: int = 0,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy={policy!r}; use one of {', '.join(POLICIES)}")
        if reference is not None and store is None:
            raise ValueError(f"reference={reference!r} needs a store= to load it from")
        if policy != "monitor" and reference is None:
            raise ValueError(f"policy={policy!r} needs reference= (the profile to compare with)")
        if probe < 1:
            raise ValueError(f"probe must be >= 1 samples, got {probe}")
        self.store = _as_store(store, storage_options)
        self.reference_name = reference
        self.policy = policy
        self.featurizer = featurizer_from(featurizer)
        self.config = config or DriftConfig()
        self.probe = probe
        self.clip = clip
        self.metadata = metadata
        self.sidecar = sidecar
        self.storage_options = storage_options
        self.seed = seed
        self.epoch = 0  # set by the dataset each epoch (and repeat under with_epoch): resampling
        self.repeat = 0  # draws differ between epochs and between passes of one epoch
        self._reference: Profile | None = None
        self.results: list[dict] = []
        self._stored: dict[tuple[str, str | None], tuple[Profile, ShardDrift | None]] = {}
        self._exclusions: set[tuple[str, str | None]] | None = None
        # Shards read on the profiling path (no stored profile) since this gate was made, and,
        # after a resume, those the saved run had read so: they are replayed the same way even
        # if their profiles are stored by now (dataset state "first_pass").
        self.first_pass: set[tuple[str, str | None]] = set()
        self.pinned: set[tuple[str, str | None]] = set()
        if reference is not None:
            self._check_fingerprint(self.reference)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reference"] = None  # each worker loads it from the store again
        state["_stored"] = {}
        return state

    @property
    def reference(self) -> Profile | None:
        if self._reference is None and self.reference_name is not None:
            self._reference = self.store.get_reference(self.reference_name)
        return self._reference

    def _check_fingerprint(self, reference: Profile) -> None:
        if reference.fingerprint != self.featurizer.fingerprint:
            raise FingerprintMismatch(
                f"reference {self.reference_name!r} in {self.store!r} was featurized with "
                f"{reference.fingerprint[:12]}..., this dataset's featurizer is "
                f"{self.featurizer.fingerprint[:12]}...: pass the featurizer the reference was "
                "built with (featurizer=...), or rebuild the reference"
            )

    # -------------------------------------------------------------------------------- before

    def before(self, shard: Shard) -> bool:
        """True to read the shard; False to skip it without reading a byte."""
        if self.store is None:
            return True
        if self.reference_name is not None and self._is_excluded(shard):
            self._record(shard, {"action": "excluded", "drifted": True, "n": 0})
            return False
        if (shard.url, shard.version) in self.pinned:
            return True  # it was being profiled when the resumed state was saved: as then
        stored = self.store.get_profile(shard.url, shard.version)
        if stored is None:
            return not self._dropped_before(shard)
        drift = compare(stored, self.reference, self.config) if self.reference is not None else None
        self._stored[(shard.url, shard.version)] = (stored, drift)
        if self.policy == "skip" and drift is not None and drift.drifted:
            self._decide(shard, drift, "skipped", stored.n)
            return False
        return True

    def _dropped_before(self, shard: Shard) -> bool:
        """Under skip: True when an earlier probe of this shard version was stored and still
        shows drift against the reference (under today's config); the skip is recorded."""
        if self.policy != "skip" or self.reference is None:
            return False
        probe = self.stored_probe(shard)
        if probe is None:
            return False
        drift = compare(probe, self.reference, self.config)
        if drift.drifted:
            self._decide(shard, drift, "skipped", 0, probe=int(probe.n))
        return drift.drifted

    def stored_probe(self, shard: Shard) -> Profile | None:
        """The stored probe of this shard version, if made with this featurizer (a probe is a
        cache: one from another featurizer is ignored, and the shard probed again)."""
        probe = self.store.get_probe(shard.url, shard.version)
        if probe is None or probe.fingerprint != self.featurizer.fingerprint:
            return None
        return probe

    def _is_excluded(self, shard: Shard) -> bool:
        """True when ``driftloader quarantine`` put this shard version on the exclusion list."""
        if self._exclusions is None:
            from .versions import load_exclusions

            self._exclusions = load_exclusions(self.store, self.reference_name)
        return (shard_key(shard.url), shard.version) in self._exclusions

    # ------------------------------------------------------------------------------- observe

    def observe(self, shard: Shard, samples: Iterator[dict]) -> Iterator[dict]:
        """Pass samples on, profiling, probing, dropping or weighting them per the policy."""
        stored, drift = self._stored.pop((shard.url, shard.version), (None, None))
        if stored is not None:
            return self._from_stored(shard, samples, stored, drift)
        return self._profiled(shard, samples)

    def _from_stored(
        self, shard: Shard, samples: Iterator[dict], stored: Profile, drift: ShardDrift | None
    ) -> Iterator[dict]:
        """The shard was profiled before at this version: no need to sketch it again."""
        if self.policy not in WEIGHTED or drift is None or not drift.drifted:
            count = 0
            for sample in samples:
                if self.policy == "reweight":
                    sample["__weight__"] = 1.0
                count += 1
                yield sample
            if drift is not None:
                unweighted = {"ess": count} if self.policy in WEIGHTED else {}
                self._decide(shard, drift, "passed", count, **unweighted)
            return
        weights = _WeightTally(self._draws(shard))
        for chunk in _chunks(samples, BATCH):
            batch = self.featurizer(chunk)
            w = importance_weights(batch, stored, self.reference, drift, self.clip)
            yield from weights.apply(chunk, w)
        self._decide(shard, drift, _ACTIONS[self.policy], weights.n, **weights.summary())

    def _profiled(self, shard: Shard, samples: Iterator[dict]) -> Iterator[dict]:
        """Sketch the shard as it streams; probe first under skip; store its profile at the end."""
        # Metadata (sidecar ``<url>.json``, the user's mapping) goes into the profile, so a new
        # source or preprocessing fingerprint is metadata drift here as in `driftloader check`.
        # One small request, made only for shards that have no stored profile yet.
        profiler = ShardProfiler(
            shard,
            self.featurizer,
            metadata=self.metadata,
            storage_options=self.storage_options,
            sidecar=self.sidecar,
        )
        reference = self.reference
        self.first_pass.add((shard.url, shard.version))
        weights = _WeightTally(self._draws(shard))
        basis: tuple[Profile, ShardDrift] | None = None
        probed = self.policy == "monitor" or reference is None
        for chunk in _chunks(samples, BATCH if probed else self.probe):
            batch = profiler.add_batch(chunk)
            if not probed:
                probed = True
                drift = compare(profiler.profile, reference, self.config)
                if self.policy in WEIGHTED:
                    # The probe window's profile weighs the whole shard: up to the quantile
                    # sketches' k samples it is exact, so the weights (and draws) are the same
                    # in every run and replay on resume; later sketches compact at random.
                    basis = (profiler.profile.copy(), drift)
                if self.policy == "skip" and drift.drifted:
                    close = getattr(samples, "close", None)
                    if close is not None:
                        close()
                    if self.store is not None:
                        self.store.put_probe(profiler.profile)
                    self._decide(shard, drift, "dropped after probe", profiler.profile.n)
                    return
            if basis is not None:
                probe_profile, probe_drift = basis
                w = importance_weights(batch, probe_profile, reference, probe_drift, self.clip)
                yield from weights.apply(chunk, w)
            else:
                yield from chunk
        profile = profiler.finish()
        if self.store is not None:
            self.store.put_profile(profile)
        if reference is not None:
            drift = compare(profile, reference, self.config)
            summary = weights.summary() if weights.n else {}
            # Weights come from the probe window: a shard that ends undrifted may still have
            # had its samples weighted (or redrawn), and one that ends drifted may not.
            acted = drift.drifted or weights.changed
            action = _ACTIONS[self.policy] if acted else "passed"
            self._decide(shard, drift, action, profile.n, **summary)

    # ------------------------------------------------------------------------------- records

    def _draws(self, shard: Shard) -> np.random.Generator | None:
        """The resampling generator of this shard in this epoch (None unless resampling)."""
        if self.policy != "resample":
            return None
        where = zlib.crc32(f"{shard_key(shard.url)}\0{shard.version}".encode())
        return np.random.default_rng([self.seed, self.epoch, self.repeat, where])

    def _decide(
        self,
        shard: Shard,
        drift: ShardDrift,
        action: str,
        n: int,
        ess: float | None = None,
        distinct: int | None = None,
        probe: int | None = None,
    ) -> None:
        decision = {
            "action": action,
            "n": int(n),
            "drifted": bool(drift.drifted),
            "score": float(drift.score),
            "top": [f.to_dict() for f in drift.top(5)],
            "schema": drift.schema,
        }
        if ess is not None:
            decision["ess"] = float(ess)
        if distinct is not None:
            decision["distinct"] = int(distinct)
        if probe is not None:  # decided from a stored probe of this many samples
            decision["probe"] = probe
        self._record(shard, decision)

    def _record(self, shard: Shard, decision: dict) -> None:
        row = {
            "url": redact(shard.url),
            "version": shard.version,
            "reference": self.reference_name,
            "policy": self.policy,
            "epoch": self.epoch,
            "decided": time.time(),
            **decision,
        }
        self.results.append(row)
        if self.store is not None:
            # The catalog's "n" is the profile's sample count; a decision may have seen fewer.
            stored = {k: v for k, v in row.items() if k != "n"}
            self.store.record(shard.url, shard.version, {**stored, "decided_n": row["n"]})

    def report(self) -> list[dict]:
        """Decisions this process took, in order."""
        return list(self.results)


class _WeightTally:
    """Applies weights to samples (attached, or drawn from when ``draws`` is given) and keeps
    what the effective sample size needs."""

    def __init__(self, draws: np.random.Generator | None = None) -> None:
        self.draws = draws
        self.n = 0
        self.sum = 0.0
        self.sum_sq = 0.0
        self.distinct = 0
        self.changed = False  # some weight was not 1

    def apply(self, chunk: list[dict], weights: np.ndarray) -> Iterator[dict]:
        self.n += len(chunk)
        self.sum += float(weights.sum())
        self.sum_sq += float(np.square(weights).sum())
        self.changed = self.changed or bool(np.any(weights != 1.0))
        if self.draws is not None:
            yield from self._resampled(chunk, weights)
            return
        for sample, weight in zip(chunk, weights.tolist()):
            sample["__weight__"] = weight
            yield sample

    def _resampled(self, chunk: list[dict], weights: np.ndarray) -> Iterator[dict]:
        picks = systematic_resample(weights, self.draws)
        self.distinct += len(np.unique(picks))
        last = -1
        for i in picks.tolist():
            # A repeat is a shallow copy, so that a later stage editing one leaves the other be.
            yield chunk[i] if i != last else dict(chunk[i])
            last = i

    @property
    def ess(self) -> float:
        return self.sum**2 / self.sum_sq if self.sum_sq > 0 else 0.0

    def summary(self) -> dict:
        if self.draws is None:
            return {"ess": self.ess}
        return {"ess": self.ess, "distinct": self.distinct}


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``len(weights)`` indices, sorted, drawn in proportion to ``weights`` with one uniform
    offset (systematic resampling): index i appears floor or ceil of n w_i / sum(w) times, the
    least variance a proportional draw can have. Equal weights give every index once."""
    n = len(weights)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    edges = np.cumsum(weights, dtype=np.float64)
    points = (rng.random() + np.arange(n)) * (edges[-1] / n)
    return np.minimum(np.searchsorted(edges, points, side="right"), n - 1)


def _chunks(samples: Iterator[dict], first: int) -> Iterator[list[dict]]:
    """Lists of samples: the first of ``first`` (the probe), then of ``BATCH``."""
    size, chunk = first, []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) >= size:
            yield chunk
            chunk, size = [], BATCH
    if chunk:
        yield chunk


_ACTIONS = {
    "monitor": "passed",
    "skip": "passed",
    "reweight": "reweighted",
    "resample": "resampled",
}

__all__ = ["POLICIES", "ShardGate", "effective_sample_size", "systematic_resample"]
