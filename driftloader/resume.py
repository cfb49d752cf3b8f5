"""Where a ``DriftDataset`` iterator is, and its saved state: what ``state_dict`` writes and
``load_state_dict`` checks (same shards and versions, same seed, same placement, same stages).

The state nests the gate's (``ShardGate.get_state``) and the stages' (``Stage.get_state``).
Version 1 states (before the nesting) still load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .distributed import Placement
from .errors import VersionMismatch
from .sources import Shard, redact

STATE_VERSION = 2
LOADABLE_VERSIONS = (1, 2)
# state keys
VERSION, SEED, SHARDS, SET_EPOCH, ITERATIONS = (
    "version",
    "seed",
    "shards",
    "set_epoch",
    "iterations",
)
EPOCH, YIELDED, PROGRESS, STAGES, GATE = "epoch", "yielded", "progress", "stages", "gate"


@dataclass
class Progress:
    """Where one iterator is: enough to rebuild its stream exactly (see ``state_dict``)."""

    epoch: int
    iterations: int
    where: tuple[int, int, int, int]
    sub: int = 0  # with_epoch: which repetition of the shard list
    yielded: int = 0  # items yielded in this repetition
    produced: int = 0  # items yielded in this iteration
    counts: list[int] = field(default_factory=list)  # samples passed on per shard started
    source_done: bool = False
    complete: bool = False

    def next_sub(self) -> None:
        self.sub, self.yielded, self.counts, self.source_done = self.sub + 1, 0, [], False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Progress:
        return cls(**{**raw, "where": tuple(raw["where"]), "counts": list(raw["counts"])})


def pass_seed(epoch: int, sub: int) -> int:
    """What seeds pass ``sub`` of ``epoch`` under ``with_epoch`` (shard order, shuffles,
    resampling): the epoch itself for the first pass, and for the others a number no real
    epoch reaches, so that a repeat within epoch e never replays epoch e + 1."""
    return epoch if sub == 0 else epoch + (sub << 32)


def where_tuple(where: Placement) -> tuple[int, int, int, int]:
    return (where.rank, where.world_size, where.worker, where.num_workers)


def saved_state(
    seed: int,
    shards: list[Shard],
    set_epoch: int | None,
    iterations: int,
    progress: Progress | None,
    stages: list[Any],
    gate: Any,
) -> dict:
    """``DriftDataset.state_dict``: JSON-safe, nesting the stages' and the gate's states."""
    return {
        VERSION: STATE_VERSION,
        SEED: seed,
        SHARDS: [[s.url, s.version] for s in shards],
        SET_EPOCH: set_epoch,
        ITERATIONS: iterations if progress is None else progress.iterations,
        EPOCH: None if progress is None else progress.epoch,
        YIELDED: 0 if progress is None else progress.produced,
        PROGRESS: None if progress is None else progress.to_dict(),
        STAGES: [stage.get_state() for stage in stages],
        GATE: None if gate is None else gate.get_state(),
    }


def check_version(state: Any) -> int:
    """The state's format version; ValueError if it is not a state this version loads."""
    if not isinstance(state, dict) or state.get(VERSION) not in LOADABLE_VERSIONS:
        versions = " or ".join(map(str, LOADABLE_VERSIONS))
        raise ValueError(f"not a DriftDataset state of version {versions}: {state!r:.200}")
    return state[VERSION]


def gate_state(state: dict) -> dict | None:
    """The gate's saved state, also from a version 1 state (which kept it at the top)."""
    if state[VERSION] == 1:
        return {"decisions": state["decisions"], "first_pass": state.get("first_pass", [])}
    return state[GATE]


def check_shards(saved: list, shards: list[Shard]) -> None:
    """Refuse a state saved over other shards or versions, naming the first that changed."""
    mine = [[s.url, s.version] for s in shards]
    if [list(x) for x in saved] == mine:
        return
    changed = [s for s, m in zip(saved, mine) if list(s) != m]
    detail = (
        f"{redact(changed[0][0])} was at version {changed[0][1]!r}"
        if changed
        else f"{len(saved)} shards then, {len(mine)} now"
    )
    raise VersionMismatch(
        f"cannot resume: the data changed since the state was saved ({detail}); "
        "resume against the same shards (pin them with a snapshot manifest) or start afresh"
    )


def check_placement(resume: Progress, where: Placement) -> None:
    """Refuse to resume a state saved by another rank or worker layout."""
    if tuple(resume.where) == where_tuple(where):
        return
    r, w, k, n = resume.where
    raise ValueError(
        f"state was saved by rank {r} of {w}, worker {k} of {n}; this iterator is rank "
        f"{where.rank} of {where.world_size}, worker {where.worker} of {where.num_workers}: "
        "resume with the same world size and workers (with DataLoader workers use "
        "torchdata's StatefulDataLoader, which saves one state per worker)"
    )
