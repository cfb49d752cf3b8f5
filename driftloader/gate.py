"""The shard gate: the one stateful stage. It decides per shard, before and while reading, with
the policy's hooks (``policy.py``), profiles the shards it reads, and records its decisions.

Decisions made from stored profiles depend only on (profile, reference, config), so every
worker and rank takes the same ones. Every decision goes to ``report()`` and the store's catalog.
The gate owns its state (``get_state`` / ``reset``): the epoch and repeat that seed resampling,
its decisions, and the shards it read on the profiling path.
"""

from __future__ import annotations

import copy
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .catalog import CatalogRow, json_safe
from .decisions import Decision, DecisionIndex
from .drift import DriftConfig, ShardDrift, compare, importance_weights
from .errors import FingerprintMismatch, ShardReadError
from .features import featurizer_from
from .gate_reads import (
    catalog_decisions,
    decisions_of,
    exclusions,
    prepare_verdicts,
    sidecar_key,
    sidecar_of,
    start_reads,
    verdict_reads,
)
from .policy import BATCH, Policy, WeightTally, policy_from
from .prefetch import ProfilesAhead
from .profile import Profile, ProfileConfig
from .profiling import Metadata, ShardProfiler, with_user_metadata
from .sources import Shard, redact
from .store import ProfileStore, recorded_featurizer, shard_key
from .writebehind import WriteBehind

READ, SKIP, EXCLUDED = "read", "skip", "excluded"  # what the gate does with a shard, unread


@dataclass
class GateOptions:
    """The gate's settings beyond store, reference and policy.

    ``featurizer``: what sketches see (default: inferred per field; must match the
    reference's). ``drift_config``: the drift tests' thresholds. ``probe``: samples held back
    to test a new shard before passing it on (skip, reweight, resample). ``metadata``: per
    shard URL (a dict, or a callable of the URL), kept in the profiles written. ``profile_config``:
    the sketch parameters of the profiles written (default: the reference's, so that they
    merge with the profiles it was built from). ``clip``: the weights' bounds. ``sidecar``:
    read each shard's ``<url>.json`` metadata sidecar.
    """

    featurizer: Any = None
    drift_config: DriftConfig | None = None
    probe: int = 256
    metadata: Metadata = None
    profile_config: ProfileConfig | None = None
    clip: tuple[float, float] = (0.1, 10.0)
    sidecar: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.probe, bool) or not isinstance(self.probe, int) or self.probe < 1:
            raise ValueError(f"probe must be >= 1 samples, got {self.probe!r}")
        if self.profile_config is not None and not isinstance(self.profile_config, ProfileConfig):
            raise ValueError(f"profile_config must be a ProfileConfig, got {self.profile_config!r}")


@dataclass
class Verdict:
    """What the gate does with a shard before reading it, and from what."""

    action: str  # READ, SKIP or EXCLUDED
    stored: Profile | None = None  # the shard's stored profile at its version
    drift: ShardDrift | None = None  # the drift of what decided (stored profile or probe)
    probe: Profile | None = None  # the stored probe that decided a skip
    n: int | None = None  # samples of the shard's stored profile, when it has one


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

    EPOCH, REPEAT, DECISIONS, FIRST_PASS = "epoch", "repeat", "decisions", "first_pass"

    def __init__(
        self,
        store: Any = None,
        reference: str | None = None,
        policy: str | Policy = "monitor",
        options: GateOptions | None = None,
        storage_options: dict | None = None,
        seed: int = 0,
    ) -> None:
        self.policy = policy_from(policy)
        if reference is not None and store is None:
            raise ValueError(f"reference={reference!r} needs a store= to load it from")
        if self.policy.NEEDS_REFERENCE and reference is None:
            raise ValueError(
                f"policy={self.policy.name!r} needs reference= (the profile to compare with)"
            )
        self.options = options if options is not None else GateOptions()
        self.store = _as_store(store, storage_options)
        self.reference_name = reference
        self.featurizer = featurizer_from(self.options.featurizer)
        self.config = self.options.drift_config or DriftConfig()
        self.storage_options = storage_options
        self.seed = seed
        self._reference: Profile | None = None
        self._stored: dict[tuple[str, str | None], tuple[Profile, ShardDrift | None]] = {}
        self._exclusions: set[tuple[str, str | None]] | None = None
        self._index: DecisionIndex | None = None
        self._look_again = False  # read the index again at this pass's first unknown shard
        self._written: dict[tuple[str, str | None], int] = {}  # catalog rows written (digest)
        self._writes = WriteBehind()  # catalog rows, written off the sample path
        self._unstored: dict[tuple[str, str | None], Profile] = {}  # in ``_writes``
        self._ahead = ProfilesAhead()  # the next shards' profiles, and what the name tells
        self.reset()
        if reference is not None:
            start_reads(self)  # beside the reference's read: what its name tells
            if self.options.featurizer is None:  # the featurizer the reference recorded
                self.featurizer = recorded_featurizer(self.reference)
            check_fingerprint(self, self.reference)

    # --------------------------------------------------------------------------- state

    def reset(self, state: dict | None = None) -> None:
        """Start afresh, or from ``get_state()``'s ``state``.

        ``first_pass``: the shards read on the profiling path (no stored profile) in this
        pass; after a resume, those the saved pass had read so are ``pinned``: replayed the
        same way even if their profiles are stored by now."""
        state = state or {}
        self.epoch = int(state.get(self.EPOCH, 0))  # seed resampling: other draws in each
        self.repeat = int(state.get(self.REPEAT, 0))  # epoch and each with_epoch pass
        self.results: list[dict] = copy.deepcopy(list(state.get(self.DECISIONS, [])))
        self.pinned = {(url, version) for url, version in state.get(self.FIRST_PASS, [])}
        self.first_pass: set[tuple[str, str | None]] = set(self.pinned)

    def get_state(self) -> dict:
        """JSON-safe: the pass's epoch and repeat, decisions so far, first-pass shards."""
        return {
            self.EPOCH: self.epoch,
            self.REPEAT: self.repeat,
            self.DECISIONS: copy.deepcopy(self.results),
            self.FIRST_PASS: sorted(map(list, self.first_pass)),
        }

    def start_pass(self, epoch: int, repeat: int, resumed: bool) -> None:
        """A pass over this iterator's shards begins (``repeat`` under ``with_epoch``); a
        resumed one profiles again only the shards its saved state had pinned."""
        self.epoch, self.repeat = epoch, repeat
        if not resumed:
            self.pinned = set()
        self.first_pass = set(self.pinned)
        prepare_verdicts(self)

    def replica(self) -> ShardGate:
        """A copy that records no decisions: to re-read a shard whose decision is taken."""
        twin = copy.copy(self)
        twin.results, twin._stored = [], {}
        return twin

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reference"] = None  # each worker loads it from the store again
        state["_stored"], state["_unstored"] = {}, {}
        state["_written"] = {}  # (the decision index read in the owner goes along: it is small)
        return state

    @property
    def reference(self) -> Profile | None:
        if self._reference is None and self.reference_name is not None:
            self._reference = self.store.get_reference(self.reference_name)
        return self._reference

    @property
    def profile_config(self) -> ProfileConfig | None:
        """The sketch parameters of the profiles the gate writes: the options', else the
        reference's (so they merge with the profiles it was built from), else the default."""
        if self.options.profile_config is not None:
            return self.options.profile_config
        return self.reference.config if self.reference is not None else None

    # ------------------------------------------------------------------------ verdicts

    def verdict(self, shard: Shard, pinned: bool = False) -> Verdict:
        """What to do with ``shard`` before reading it, from the store only (the skip rule):
        excluded by ``driftloader quarantine``; skipped when the policy skips the drift of its
        stored profile, else of its stored probe; else read. ``pinned``: read it as the saved
        state did, whatever is stored."""
        if self.store is None:
            return Verdict(READ)
        if self.reference_name is not None and self.is_quarantined(shard):
            return Verdict(EXCLUDED)
        if pinned:
            return Verdict(READ)
        known = indexed_verdict(self, shard)
        if known is not None:
            return known
        read, then = verdict_reads(self, shard)
        stored, drift = self._ahead.take((shard.url, shard.version), lambda: then(read()))
        if stored is not None:
            if drift is not None:  # its record is written behind the samples
                decisions_of(self).add(
                    shard.url, shard.version, stored.n, drift, self._writes.submit
                )
            skip = drift is not None and self.policy.skips(drift)
            return Verdict(SKIP if skip else READ, stored, drift, n=int(stored.n))
        if not self.policy.SKIPS_UNREAD or self.reference is None:
            return Verdict(READ)
        probe = self.stored_probe(shard)
        if probe is None:
            return Verdict(READ)
        drift = compare(probe, self.reference, self.config)
        return Verdict(SKIP if self.policy.skips(drift) else READ, None, drift, probe)

    def before(self, shard: Shard, verdict: Verdict | None = None) -> bool:
        """True to read the shard; False to skip it without reading a byte (recorded).
        ``verdict``: the one ``ahead(shard)`` gave (the reader asks while earlier shards
        are read, to fetch only admitted shards), else it is taken now."""
        key = (shard.url, shard.version)
        if verdict is None:
            verdict = self.ahead(shard)
        if verdict.action != READ:  # not read, so not profiled
            self._ahead.discard(sidecar_key(shard))
        if verdict.action == EXCLUDED:
            self._record(shard, {"action": "excluded", "drifted": True, "n": 0})
            return False
        if verdict.action == SKIP:
            probe = None if verdict.probe is None else int(verdict.probe.n)
            self._decide(shard, verdict.drift, "skipped", verdict.n or 0, probe=probe)
            return False
        if verdict.n is not None:  # a stored profile or an indexed decision: no sketching
            self._stored[key] = (verdict.stored, verdict.drift)
        return True

    def ahead(self, shard: Shard) -> Verdict:
        """``verdict`` as ``before`` takes it, recording nothing: asked ahead of reading."""
        return self.verdict(shard, pinned=(shard.url, shard.version) in self.pinned)

    def stored_probe(self, shard: Shard) -> Profile | None:
        """The stored probe of this shard version, if made with this featurizer (a probe is a
        cache: one from another featurizer is ignored, and the shard probed again)."""
        probe = self.store.get_probe(shard.url, shard.version)
        if probe is None or probe.fingerprint != self.featurizer.fingerprint:
            return None
        return probe

    def is_quarantined(self, shard: Shard) -> bool:
        """True when ``driftloader quarantine`` put this shard version on the exclusion list."""
        excluded = exclusions(self)
        if not excluded:  # the usual case: no key made for each of 100k shards
            return False
        return (shard_key(shard.url), shard.version) in excluded

    # ------------------------------------------------------------------------- observe

    def observe(self, shard: Shard, samples: Iterator[dict]) -> Iterator[dict]:
        """Pass samples on, profiling, probing, dropping or weighting them per the policy.

        A read error mid-shard ends the shard as a plain read would: the samples read before
        it are passed on as the policy says (a probe window cut short is tested as it is),
        the shard's decision row says ``"failed"`` and at which byte, no profile of it is
        stored, and the error is raised again for the dataset's ``on_error``."""
        known = self._stored.pop((shard.url, shard.version), None)
        failure: list[ShardReadError] = []
        guarded = _until_read_error(samples, failure)
        if known is not None:
            stream = self._from_stored(shard, guarded, *known, failure)
        else:
            stream = self._profiled(shard, guarded, failure)
        return _then_raise(stream, failure)

    def failed(self, shard: Shard, error: ShardReadError, n: int) -> None:
        """Record that the shard failed after ``n`` samples were passed on (not in the
        catalog: a decision stored there is not overwritten by a failed read)."""
        offset = getattr(error, "offset", None)
        row = {"action": FAILED, "n": int(n), "error": str(error), "offset": offset}
        self._record(shard, row, catalog=False)

    def _from_stored(
        self,
        shard: Shard,
        samples: Iterator[dict],
        stored: Profile | None,
        drift: ShardDrift | None,
        failure: list[ShardReadError],
    ) -> Iterator[dict]:
        """The shard was profiled before at this version: no need to sketch it again
        (``stored`` is None when an indexed decision stood in for its profile; it is loaded
        only when the policy weighs a drifted shard)."""
        policy = self.policy
        if not (policy.WEIGHS and drift is not None and drift.drifted):
            count = 0
            for sample in samples:
                count += 1
                yield policy.unweighed(sample)
            if failure:
                self.failed(shard, failure[0], count)
            elif drift is not None:
                self._decide(shard, drift, "passed", count, **policy.unweighed_summary(count))
            return
        tally = policy.tally(draws_key(self, shard))
        for chunk in _chunks(samples, BATCH):
            weights = importance_weights(
                self.featurizer(chunk), stored, self.reference, drift, self.options.clip
            )
            yield from tally.apply(chunk, weights)
        if failure:
            self.failed(shard, failure[0], tally.n)
        else:
            self._decide(shard, drift, policy.ACTED, tally.n, **tally.summary())

    def _profiled(
        self, shard: Shard, samples: Iterator[dict], failure: list[ShardReadError]
    ) -> Iterator[dict]:
        """Sketch the shard as it streams; probe first if the policy does; store its profile
        at the end and decide."""
        profiler = self._profiler(shard)
        self.first_pass.add((shard.url, shard.version))
        tally = self.policy.tally(draws_key(self, shard))
        probing = self.policy.PROBES and self.reference is not None
        chunks = _chunks(samples, self.options.probe if probing else BATCH)
        basis = None
        if probing:
            first = next(chunks, None)
            if first is not None:
                basis = yield from self._after_probe(shard, samples, profiler, first, tally)
                if basis is _DROPPED:
                    return
        for chunk in chunks:
            yield from _weighed(self, chunk, profiler.add_batch(chunk), basis, tally)
        if failure:  # a partial profile is never stored
            self.failed(shard, failure[0], profiler.finish().n if basis is None else tally.n)
            return
        self._finish(shard, profiler.finish(), tally)

    def _profiler(self, shard: Shard) -> ShardProfiler:
        # Metadata (sidecar ``<url>.json``, the user's mapping) goes into the profile, so a new
        # source or preprocessing fingerprint is metadata drift here as in `driftloader check`.
        found, user = sidecar_of(self, shard), self.options.metadata
        return ShardProfiler(
            shard,
            self.featurizer,
            config=self.profile_config,
            metadata=lambda url: with_user_metadata(url, found, user),
        )

    def _after_probe(
        self,
        shard: Shard,
        samples: Iterator[dict],
        profiler: ShardProfiler,
        chunk: list[dict],
        tally: WeightTally,
    ) -> Iterator[dict]:
        """Test the probe window; drop the shard (returns ``_DROPPED``) or pass the window on.
        Returns what weighs the rest: the probe window's profile and drift, under a weighing
        policy. Up to the quantile sketches' k samples it is exact, so the weights (and draws)
        are the same in every run and replay on resume; later sketches compact at random."""
        batch = profiler.add_batch(chunk)
        drift = compare(profiler.profile, self.reference, self.config)
        if self.policy.drops(drift):
            close = getattr(samples, "close", None)
            if close is not None:
                close()
            if self.store is not None:  # behind the samples, as the decision's row
                self._writes.submit(shard_key(shard.url), self.store.put_probe, profiler.profile)
            self._decide(shard, drift, "dropped after probe", profiler.profile.n)
            return _DROPPED
        basis = (profiler.profile.copy(), drift) if self.policy.WEIGHS else None
        yield from _weighed(self, chunk, batch, basis, tally)
        return basis

    def _finish(self, shard: Shard, profile: Profile, tally: WeightTally) -> None:
        if self.store is not None:
            store_behind(self, shard, profile)
        if self.reference is None:
            return
        drift = compare(profile, self.reference, self.config)
        if self.store is not None and self.store.writable:
            decisions_of(self).add(shard.url, shard.version, profile.n, drift, self._writes.submit)
        summary = tally.summary() if tally.n else {}
        # Weights come from the probe window: a shard that ends undrifted may still have had
        # its samples weighted (or redrawn), and one that ends drifted may not.
        action = self.policy.action(drift.drifted or tally.changed)
        self._decide(shard, drift, action, profile.n, **summary)

    # ------------------------------------------------------------------------- records

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
            # the features that drifted, as a decision read back from the index keeps them
            "top": [f.to_dict() for f in drift.top(5) if f.drifted],
            "schema": drift.schema,
        }
        if ess is not None:
            decision["ess"] = float(ess)
        if distinct is not None:
            decision["distinct"] = int(distinct)
        if probe is not None:  # decided from a stored probe of this many samples
            decision["probe"] = probe
        self._record(shard, decision)

    def _record(self, shard: Shard, decision: dict, catalog: bool = True) -> None:
        row = {
            "url": shard_key(shard.url),  # the catalog's form, whatever form the user gave
            "version": shard.version,
            "reference": self.reference_name,
            "policy": self.policy.name,
            "epoch": self.epoch,
            "decided": time.time(),
            **decision,
        }
        self.results.append(row)
        if self.store is not None and catalog:
            # The catalog's "n" is the profile's sample count; a decision may have seen fewer.
            stored = {k: v for k, v in row.items() if k != "n"}
            fields = {**stored, "decided_n": row["n"]}
            digest = decision_digest(json_safe(fields))
            if not self._written_before(row["url"], shard.version, digest):
                submit_row(self, shard, fields, digest)

    def _written_before(self, key: str, version: str | None, digest: int) -> bool:
        """True when this gate already wrote this decision on this shard-version (in an earlier
        epoch or pass): the catalog row is then left as it is (it keeps the epoch, time and top
        features of when it was first taken; a decision read back from the index keeps only
        the drifted features), which saves a read and a write per shard and epoch."""
        if self._written.get((key, version)) == digest:
            return True
        self._written[(key, version)] = digest
        return False

    def flush(self) -> None:
        """Wait for every row and record handed over, and for the index's fold of the records
        read (the reader calls it when a pass ends); raises the first failed write."""
        self._writes.flush()
        if self._index is not None:
            if self._index.unwritten:
                self._index.write_unwritten(self._writes.submit)
                self._writes.flush()
            self._index.settle()  # a fold of the records read, started when they were read

    def let_go(self) -> None:
        """``WriteBehind.let_go`` of the rows handed over (a pass closed on another thread)."""
        self._writes.let_go()

    def report(self, shards: list[Shard] | None = None, since: float = 0.0) -> list[dict]:
        """Decisions this process took, in order; with ``shards``, then those of other
        processes (DataLoader workers, other ranks) on them since ``since`` (read back from
        the catalog, which keeps each shard's latest decision; one that the catalog holds
        already, taken again in a later epoch or run, is not written again, so its row names
        when it was first taken: ``DriftDataset.drift_report`` takes its DataLoader workers'
        rows from ``worker_reports`` instead)."""
        self.flush()  # this process's rows are in the catalog before it is read
        rows = list(self.results)
        if shards is None:
            return rows
        return rows + catalog_decisions(self, shards, since, rows)


def _weighed(
    gate: ShardGate, chunk: list[dict], batch: Any, basis: tuple | None, tally: WeightTally
) -> Iterator[dict]:
    """``chunk`` as it is, or weighed (or redrawn) from ``basis``: (probe profile, drift)."""
    if basis is None:
        return iter(chunk)
    profile, drift = basis
    weights = importance_weights(batch, profile, gate.reference, drift, gate.options.clip)
    return tally.apply(chunk, weights)


def check_fingerprint(gate: ShardGate, reference: Profile) -> None:
    """``FingerprintMismatch`` unless ``reference`` was featurized as ``gate`` featurizes."""
    if reference.fingerprint != gate.featurizer.fingerprint:
        raise FingerprintMismatch(
            f"reference {gate.reference_name!r} in {gate.store!r} was featurized with "
            f"{reference.fingerprint[:12]}..., this dataset's featurizer is "
            f"{gate.featurizer.fingerprint[:12]}...: pass the featurizer the reference was "
            "built with (featurizer=...), or rebuild the reference"
        )


def decision_digest(fields: dict) -> int:
    """A digest of a catalog row's decision, without when it was taken (epoch, time) and its
    top features (a decision read back from the index keeps only the drifted ones)."""
    kept = {k: v for k, v in fields.items() if k not in ("epoch", "decided", "top")}
    return zlib.crc32(json.dumps(kept, sort_keys=True, default=str).encode())


def submit_row(gate: ShardGate, shard: Shard, fields: dict, digest: int) -> None:
    """Hand the catalog row of decision ``fields`` (of ``decision_digest`` ``digest``) on
    ``shard`` to the gate's write-behind (``record_if_new``), then note in the shard's decision record that the row holds it
    (``DecisionIndex.mark_row``). A decision recalled from a record that says so already
    costs no request: the catalog is not even read (in DataLoader workers, the store is then
    never reached). A row another reference's run rewrote since is not restored."""
    index = decisions_of(gate) if gate.reference_name is not None else None
    known = index.get(shard.url, shard.version) if index is not None else None
    if known is not None and known.row == digest:
        return
    row = (gate.store, index, known, shard, fields, digest)
    gate._writes.submit(shard_key(shard.url), _write_row, *row)


def _write_row(
    store: ProfileStore,
    index: DecisionIndex | None,
    known: Decision | None,
    shard: Shard,
    fields: dict,
    digest: int,
) -> None:
    if record_if_new(store, shard, fields, digest) is not None and known is not None:
        index.mark_row(known, digest)


def record_if_new(store: ProfileStore, shard: Shard, fields: dict, same: int) -> bool | None:
    """Write decision ``fields`` into the catalog row of ``shard`` unless the row holds that
    decision already (its ``decision_digest`` is ``same``): True when written, False when it
    held it, None when the store refused the write. A clean shard decided again in every run
    then costs one small read, not a read and a write: its row keeps when it was first taken."""
    held = []

    def holds(current: CatalogRow) -> bool:
        stored = current.to_dict()
        held.append(decision_digest({key: stored.get(key) for key in fields}) == same)
        return held[-1]

    written = store.record(shard.url, shard.version, fields, holds=holds)
    return True if written else (False if any(held) else None)


def draws_key(gate: ShardGate, shard: Shard) -> list[int]:
    """Seeds this shard's random draws in the gate's epoch and pass."""
    where = zlib.crc32(f"{shard_key(shard.url)}\0{shard.version}".encode())
    return [gate.seed, gate.epoch, gate.repeat, where]


def store_behind(gate: ShardGate, shard: Shard, profile: Profile) -> None:
    """Store the profile the gate made of ``shard`` behind the samples (a slot, the profile,
    the catalog row read and written: four requests), before the shard's row. Until it is
    written a verdict on the shard (drawn again: ``resampled``) finds it in the gate."""
    key = (shard.url, shard.version)
    gate._unstored[key] = profile

    def store() -> None:
        try:
            gate.store.put_profile(profile)
        finally:
            gate._unstored.pop(key, None)

    gate._writes.submit(shard_key(shard.url), store)


def plan_row(gate: ShardGate, shard: Shard) -> dict:
    """``{"url", "version", "n", "action"}`` for ``DriftDataset.plan``, from ``gate``: the
    stored sample count (None without a stored profile) and the verdict, from the store only."""
    verdict = gate.verdict(shard)
    n = verdict.n
    if verdict.action == EXCLUDED:
        stored = gate.store.get_profile(shard.url, shard.version, gate.featurizer.fingerprint)
        n = None if stored is None else int(stored.n)
    return {
        "url": redact(shard.url),
        "version": shard.version,
        "n": n,
        "action": verdict.action,
    }


def indexed_verdict(gate: ShardGate, shard: Shard) -> Verdict | None:
    """The verdict from the shard's indexed decision, without loading its profile; None when
    it has none, or when the gate's policy weighs a drifted shard (that needs the profile)."""
    if gate.reference_name is None:
        return None
    index = decisions_of(gate)
    known = index.get(shard.url, shard.version)
    if known is None and gate._look_again:  # once a pass: the records written since
        gate._look_again = False
        index.forget()
        known = index.get(shard.url, shard.version)
    if known is None:
        return None
    drift = known.drift()
    skip = gate.policy.skips(drift)
    if gate.policy.WEIGHS and drift.drifted and not skip:
        return None
    return Verdict(SKIP if skip else READ, None, drift, n=known.n)


_DROPPED: Any = object()
FAILED = "failed"  # the action of a shard that failed mid-read


def _until_read_error(samples: Iterator[dict], failure: list) -> Iterator[dict]:
    """``samples`` until a ``ShardReadError``, which ends them and is kept in ``failure``."""
    try:
        yield from samples
    except ShardReadError as e:
        failure.append(e)


def _then_raise(stream: Iterator[dict], failure: list) -> Iterator[dict]:
    """``stream``, then the read error that ended it, if any."""
    yield from stream
    if failure:
        raise failure[0]


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
