"""Every stage and every policy resumes exactly (tests/save_load.py), and stages and the gate
own their state: get_state / reset, refusals of other pipelines, old states still load."""

from __future__ import annotations

import json
import os

import pytest
import webdataset as wds

import driftloader as dl
from driftloader import stages as S
from driftloader.gate import ShardGate
from driftloader.policy import POLICIES
from driftloader.reader import read_shard

from .conftest import write_gated_corpus, write_shard
from .save_load import run_test_save_load_state


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Five shards of uneven sizes (52 samples)."""
    root = tmp_path_factory.mktemp("stages")
    urls = []
    for s, n in enumerate([9, 14, 7, 12, 10]):
        write_shard(root / f"r-{s}.tar", n, seed=s, start=s * 100)
        urls.append(str(root / f"r-{s}.tar"))
    return urls


def _key(sample: dict) -> str:
    return sample["__key__"]


def _even(sample: dict) -> bool:
    return int(sample["cls"]) % 2 == 0


# One pipeline per stage kind, each after a shuffle so that the resume has a buffer to rebuild.
STAGE_CASES = {
    "decode": lambda ds: ds.decode().map(lambda s: (s["__key__"], s["cls"])),
    "map": lambda ds: ds.map(_key),
    "map_dict": lambda ds: ds.decode().map_dict(cls=lambda c: c * 2).to_tuple("__key__", "cls"),
    "to_tuple": lambda ds: ds.to_tuple("__key__", "cls"),
    "rename": lambda ds: ds.rename(label="cls", keep=False),
    "select": lambda ds: ds.select(_even).map(_key),
    "shuffle": lambda ds: ds.map(_key).shuffle(6, initial=2),
    "batched": lambda ds: ds.map(_key).batched(4, collation_fn=None),
    "unbatched": lambda ds: ds.to_tuple("__key__", "cls").batched(4).unbatched(),
    "custom": lambda ds: ds.compose(lambda data, ctx, n: (s for s in data if n), 1).map(_key),
    "webdataset": lambda ds: ds.compose(wds.filters.select(_even)).map(_key),
    "slice": lambda ds: ds.map(_key).slice(3, None, 2),
    "rsample": lambda ds: ds.map(_key).rsample(0.6),
    "map_tuple": lambda ds: ds.to_tuple("__key__", "cls").map_tuple(None, len),
    "log_keys": lambda ds: ds.log_keys(os.devnull).map(_key),
    "xdecode": lambda ds: ds.xdecode(must_decode=False).map(lambda s: (s["__key__"], s["cls"])),
}


def test_every_stage_kind_has_a_case():
    assert set(STAGE_CASES) == set(S.STAGES)  # a new stage is resumed by the test below too


@pytest.mark.parametrize("midpoint", [0.3, 0.8])
@pytest.mark.parametrize("kind", sorted(STAGE_CASES))
def test_every_stage_resumes(shards, kind, midpoint):
    def make() -> dl.DriftDataset:
        return STAGE_CASES[kind](dl.DriftDataset(shards).shuffle(10))

    kinds = {st.KIND for st in make().stages}
    assert kind in kinds
    n = len(list(make()))
    run_test_save_load_state(make, int(n * midpoint))


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    corpus = write_gated_corpus(tmp_path_factory.mktemp("gated"), [40, 30], 1)
    a, b = corpus["clean"]
    return {"store": corpus["store"], "train": [a, corpus["drifted"][0], b]}


@pytest.mark.parametrize("midpoint", [0.4, 1.0])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_resumes(gated, policy, midpoint):
    def make() -> dl.DriftDataset:
        ds = dl.DriftDataset(gated["train"], store=gated["store"], reference="ref", policy=policy)
        return ds.shuffle(20).map(lambda s: (s["__key__"], s.get("__weight__")))

    n = len(list(make()))
    run_test_save_load_state(make, int(n * midpoint))


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_the_gate_resumes_between_shards(gated, policy):
    """The gate alone: stopped after its first shard, its state reset into a fresh gate, it
    takes the same decisions and passes the same samples as an uninterrupted gate."""
    ds = dl.DriftDataset(gated["train"], shuffle=False)
    shards = ds.shards

    def run(gate: ShardGate, part: list) -> list:
        keys = []
        for shard in part:
            if gate.before(shard):
                keys += [s["__key__"] for s in gate.observe(shard, read_shard(shard))]
        return keys

    def make() -> ShardGate:
        gate = ShardGate(gated["store"], "ref", policy, seed=3)
        gate.start_pass(epoch=2, repeat=0, resumed=False)
        return gate

    run(make(), shards)  # the store learns what a pass stores (probes): every gate below sees it
    whole = make()
    keys = run(whole, shards)
    first = make()
    head = run(first, shards[:1])
    state = json.loads(json.dumps(first.get_state()))
    assert set(state) == {
        ShardGate.EPOCH,
        ShardGate.REPEAT,
        ShardGate.DECISIONS,
        ShardGate.FIRST_PASS,
    }
    fresh = ShardGate(gated["store"], "ref", policy, seed=3)
    fresh.reset(state)
    assert head + run(fresh, shards[1:]) == keys
    strip = [{k: v for k, v in r.items() if k != "decided"} for r in whole.report()]
    assert [{k: v for k, v in r.items() if k != "decided"} for r in fresh.report()] == strip
    assert {r["epoch"] for r in fresh.report()} == {2}


def test_a_stage_must_say_how_it_resumes():
    with pytest.raises(TypeError, match="must set KIND and RESUME"):

        class Silent(S.Stage):  # noqa: F841 - refused as it is defined
            KIND = "silent"

            def __call__(self, data, ctx):
                return iter(data)

    assert "silent" not in S.STAGES


def test_a_state_of_another_pipeline_is_refused(shards):
    ds = dl.DriftDataset(shards).shuffle(10).map(_key)
    next(iter(ds))
    state = ds.state_dict()
    with pytest.raises(ValueError, match="pipeline changed.*shuffle"):
        dl.DriftDataset(shards).shuffle(12).map(_key).load_state_dict(state)
    with pytest.raises(ValueError, match="2 stages, this one has 3"):
        dl.DriftDataset(shards).shuffle(10).map(_key).map(_key).load_state_dict(state)


def test_a_version_1_state_still_loads(gated):
    def make() -> dl.DriftDataset:
        ds = dl.DriftDataset(gated["train"], store=gated["store"], reference="ref", policy="skip")
        return ds.shuffle(20).map(_key)

    uninterrupted = make()
    whole = list(uninterrupted)
    expected = sorted((r["url"], r["action"]) for r in uninterrupted.drift_report())
    ds = make()
    it = iter(ds)
    head = [next(it) for _ in range(25)]
    state = ds.state_dict()
    gate = state.pop("gate")
    del state["stages"]
    old = {**state, "version": 1, "decisions": gate["decisions"], "first_pass": []}
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(old)))
    assert head + list(resumed) == whole
    assert sorted((r["url"], r["action"]) for r in resumed.drift_report()) == expected


def test_stage_states_are_json_and_name_their_kind(shards):
    ds = STAGE_CASES["batched"](dl.DriftDataset(shards).shuffle(10))
    states = json.loads(json.dumps(ds.state_dict()))["stages"]
    assert [s[S.Stage.KIND_KEY] for s in states] == ["shuffle", "map", "batched"]
    assert states[0][S.Stage.PARAMS_KEY] == {"bufsize": 10, "initial": 100, "salt": 0}
