"""The drift policies: what the shard gate (``gate.py``) does about drift, one class per policy.

* ``Monitor`` (``"monitor"``): pass every sample, record every shard's drift.
* ``Skip`` (``"skip"``): a shard whose stored profile (at its current version) is drifted is
  skipped before any byte of it is read; a shard with no stored profile is read through a
  probe window (``probe`` samples, buffered, not yet yielded) and dropped as soon as the probe
  shows drift (the probe's profile is stored apart, so later epochs and runs skip the shard
  unread); otherwise it is passed on, re-checked at its end, and its profile stored, so that
  the next epoch (any rank, any run) decides before reading.
* ``Reweight`` (``"reweight"``): every sample carries ``"__weight__"``, an estimate of
  p_ref(x) / p_shard(x) from the sketches of the drifted features (the stored profile's, else
  the probe window's), clipped, mean 1 per batch; undrifted shards get 1.0.
* ``Resample`` (``"resample"``): the same weights, applied by drawing instead of by the loss:
  each batch of a drifted shard is replaced by as many samples drawn in proportion to their
  weights (systematic resampling: a sample of weight w appears floor(w) or ceil(w) times), so
  the training loop needs no change. Counts per shard are kept; repeated samples are copies
  of the same dict (same ``__key__``). The draws depend on the dataset's seed, the epoch and
  the shard, so they differ between epochs, agree across ranks, and replay exactly on resume.
  A shard without a stored profile is weighed from its probe window's profile (exact up to
  the KLL sketches' k = 400 samples, so every run weighs it alike; see docs/distributed.md).

Each policy answers the gate's hooks: before a shard (``skips``), after the probe window
(``drops``), weighing a chunk (``tally`` / ``unweighed``) and at the end of a shard
(``action``). To add a policy: one ``Policy`` subclass and one line in ``POLICIES``. No code
outside this module compares policy names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from .drift import ShardDrift, effective_sample_size

BATCH = 256  # samples weighed at a time
PASSED = "passed"


class Policy:
    """What the gate does about drift. The base passes everything and acts on nothing."""

    name: ClassVar[str]
    NEEDS_REFERENCE: ClassVar[bool] = True
    PROBES: ClassVar[bool] = True  # hold a new shard's first ``probe`` samples back to test them
    SKIPS_UNREAD: ClassVar[bool] = False  # may skip a shard from its stored profile or probe
    WEIGHS: ClassVar[bool] = False  # samples of a drifted shard are weighed
    ACTED: ClassVar[str] = PASSED  # the action recorded for a shard it acted on

    # ------------------------------------------------------------------- before a shard

    def skips(self, drift: ShardDrift) -> bool:
        """Before reading: skip a shard whose stored profile (or stored probe) shows ``drift``."""
        return False

    # ------------------------------------------------------------ after the probe window

    def drops(self, drift: ShardDrift) -> bool:
        """After the probe window: drop the rest of the shard (its probe showed ``drift``)."""
        return False

    # ---------------------------------------------------------------- weighing a chunk

    def tally(self, draws_key: list[int]) -> WeightTally:
        """What weighs this shard's chunks; ``draws_key`` seeds any random draws."""
        return WeightTally()

    def unweighed(self, sample: dict) -> dict:
        """A sample of a shard that is not weighed, as it is passed on."""
        return sample

    def unweighed_summary(self, count: int) -> dict:
        """What the decision row says about an unweighed shard of ``count`` samples."""
        return {}

    # ------------------------------------------------------------------ end of a shard

    def action(self, acted: bool) -> str:
        """The action recorded at a shard's end: ``ACTED`` if it drifted or was weighed."""
        return self.ACTED if acted else PASSED


class Monitor(Policy):
    """Pass every sample; record every shard's drift."""

    name = "monitor"
    NEEDS_REFERENCE = False
    PROBES = False


class Skip(Policy):
    """Skip drifted shards unread (from stored sketches), or drop them after the probe."""

    name = "skip"
    SKIPS_UNREAD = True

    def skips(self, drift: ShardDrift) -> bool:
        return drift.drifted

    def drops(self, drift: ShardDrift) -> bool:
        return drift.drifted


class Reweight(Policy):
    """Attach ``__weight__`` (p_ref / p_shard) to every sample."""

    name = "reweight"
    WEIGHS = True
    ACTED = "reweighted"

    def unweighed(self, sample: dict) -> dict:
        sample["__weight__"] = 1.0
        return sample

    def unweighed_summary(self, count: int) -> dict:
        return {"ess": count}


class Resample(Policy):
    """Redraw each batch of a drifted shard in proportion to its weights."""

    name = "resample"
    WEIGHS = True
    ACTED = "resampled"

    def tally(self, draws_key: list[int]) -> WeightTally:
        return WeightTally(np.random.default_rng(draws_key))

    def unweighed_summary(self, count: int) -> dict:
        return {"ess": count}


POLICIES: dict[str, type[Policy]] = {
    "monitor": Monitor,
    "skip": Skip,
    "reweight": Reweight,
    "resample": Resample,
}


def policy_from(policy: str | Policy) -> Policy:
    """The policy named ``policy`` (or ``policy`` itself); ValueError naming it if unknown."""
    if isinstance(policy, Policy):
        return policy
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"policy={policy!r}; use one of {', '.join(POLICIES)}")
    return POLICIES[policy]()


class WeightTally:
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


__all__ = [
    "BATCH",
    "POLICIES",
    "Monitor",
    "Policy",
    "Resample",
    "Reweight",
    "Skip",
    "WeightTally",
    "effective_sample_size",
    "policy_from",
    "systematic_resample",
]
