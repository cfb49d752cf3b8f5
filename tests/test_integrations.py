"""The Lightning and Accelerate examples (docs/distributed.md) run and train on what they should:
every clean sample once per epoch, none of the drifted shard, a new order every epoch, the
ranks split and in lockstep, and checkpoints that resume where the docs say."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import driftloader as dl

from .conftest import run_ranks

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PER_SHARD, CLEAN_SHARDS, BATCH = 1000, 4, 64
CLEAN = list(range(CLEAN_SHARDS * PER_SHARD))  # sample ids of train-00 .. train-03
DRIFTED = range(CLEAN_SHARDS * PER_SHARD, (CLEAN_SHARDS + 1) * PER_SHARD)  # train-04-shifted


def _example(name: str):
    if str(EXAMPLES) not in sys.path:  # the examples import their shared gated_shards.py
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(command: list[str], env: dict | None = None) -> str:
    result = run_ranks(command, 240, env)  # two processes each (torchrun, Lightning's DDP)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _torchrun() -> list[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    if torchrun.exists():
        return [str(torchrun), "--standalone", "--nproc_per_node=2"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _ids(ds, epoch: int) -> list[int]:
    """What the example's pipeline yields in ``epoch`` here (rank/world from the environment)."""
    ds.set_epoch(epoch)
    return [i for ids, _, _ in ds for i in ids.tolist()]


def _check_epochs(summary: dict, epochs: int = 2, exact: bool = True) -> None:
    """Per epoch: the ranks read disjoint clean samples, the same number each and in as many
    steps; with ``exact`` every clean sample exactly once. Orders change between epochs."""
    ranks = summary["ranks"]
    for epoch in map(str, range(epochs)):
        seen = [rank["seen"][epoch] for rank in ranks]
        flat = [i for ids in seen for i in ids]
        assert not set(flat) & set(DRIFTED), "a sample of the drifted shard was trained on"
        assert len(flat) == len(set(flat)), "a sample was seen twice in one epoch"
        assert set(flat) <= set(CLEAN)
        if exact:
            assert sorted(flat) == CLEAN
        assert len({len(ids) for ids in seen}) == 1, "ranks saw different numbers of samples"
        assert len({rank["steps"][epoch] for rank in ranks}) == 1, "ranks ran different steps"
    for rank in ranks:
        assert rank["seen"]["0"] != rank["seen"]["1"]  # set_epoch: a new order
        assert rank["loss"]["1"] < rank["loss"]["0"]  # it learned something


def _check_report(report: list[dict]) -> None:
    actions = {Path(row["url"]).name: row["action"] for row in report}
    assert actions == {
        **{f"train-{j:02d}-clean.tar": "passed" for j in range(CLEAN_SHARDS)},
        "train-04-shifted.tar": "skipped",
    }


# --------------------------------------------------------------------------------- Lightning


@pytest.fixture(scope="module")
def lt():
    pytest.importorskip("lightning")
    return _example("lightning_train")


@pytest.fixture(scope="module")
def lightning_data(lt, tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("lightning")
    return folder, lt.build(folder)


@pytest.fixture(scope="module")
def lightning_run(lt, lightning_data) -> dict:
    """Two epochs in this process, with checkpoints at step 10 and at the end of epoch 0."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    folder, urls = lightning_data
    checkpoints = [
        ModelCheckpoint(dirpath=folder / "steps", every_n_train_steps=10, save_top_k=-1),
        ModelCheckpoint(dirpath=folder / "epochs", save_top_k=-1),  # at every epoch's end
    ]
    model, summary = lt.train(
        urls, str(folder / "store"), enable_checkpointing=True, callbacks=checkpoints
    )
    return {"model": model, **summary}


def test_lightning_trains_each_clean_sample_once_per_epoch(lt, lightning_data, lightning_run):
    _check_epochs(lightning_run)
    _check_report(lightning_run["report"])
    folder, urls = lightning_data
    data = lt.DriftData(urls, str(folder / "store"))
    data.setup("fit")
    for epoch in (0, 1):  # Lightning trained on exactly what the dataset yields for that epoch
        assert lightning_run["ranks"][0]["seen"][str(epoch)] == _ids(data.ds, epoch)


@pytest.mark.parametrize("saved_by", ["ModelCheckpoint", "save_checkpoint"])
def test_lightning_resumes_an_end_of_epoch_checkpoint_exactly(
    lt, lightning_data, lightning_run, saved_by, tmp_path
):
    folder, urls = lightning_data
    full = lightning_run["ranks"][0]["seen"]
    if saved_by == "ModelCheckpoint":  # saved in on_train_epoch_end
        (checkpoint,) = (folder / "epochs").glob("epoch=0-*.ckpt")
    else:  # saved after fit(max_epochs=1) returned
        checkpoint = tmp_path / "one-epoch.ckpt"
        _, first = lt.train(urls, str(folder / "store"), epochs=1, save_to=str(checkpoint))
        assert first["ranks"][0]["seen"] == {"0": full["0"]}
    _, resumed = lt.train(urls, str(folder / "store"), ckpt_path=str(checkpoint))
    seen = resumed["ranks"][0]["seen"]
    assert list(seen) == ["1"]  # Lightning went on with epoch 1 ...
    assert seen["1"] == full["1"]  # ... in epoch 1's order


def test_lightning_mid_epoch_checkpoint_resumes_one_batch_ahead(lt, lightning_data, lightning_run):
    """Lightning fetches a batch ahead, so the saved dataset state is one batch past the
    model's: resuming skips that batch and repeats nothing (docs/distributed.md)."""
    folder, urls = lightning_data
    _, resumed = lt.train(
        urls, str(folder / "store"), ckpt_path=str(folder / "steps" / "epoch=0-step=10.ckpt")
    )
    full = lightning_run["ranks"][0]["seen"]
    rest = resumed["ranks"][0]["seen"]["0"]
    assert rest == full["0"][11 * BATCH :]
    assert resumed["ranks"][0]["seen"]["1"] == full["1"]


def test_lightning_ddp_on_two_cpu_processes(lt, lightning_data, tmp_path, monkeypatch):
    folder, urls = lightning_data
    out = tmp_path / "summary.json"
    stdout = _run(
        [
            sys.executable,
            str(EXAMPLES / "lightning_train.py"),
            "--devices",
            "2",
            "--json",
            str(out),
        ],
        env={lt.DATA_ENV: str(folder)},
    )
    assert "samples per rank [2000, 2000]" in stdout
    summary = json.loads(out.read_text())
    assert len(summary["ranks"]) == 2
    _check_epochs(summary)  # seed 0 leaves both ranks two clean shards in epochs 0 and 1
    _check_report(summary["report"])
    data = lt.DriftData(urls, str(folder / "store"))
    data.setup("fit")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):  # each rank read its own slice, in its epoch's order
        monkeypatch.setenv("RANK", str(rank))
        for epoch in (0, 1):
            assert summary["ranks"][rank]["seen"][str(epoch)] == _ids(data.ds, epoch)


# -------------------------------------------------------------------------------- Accelerate


@pytest.fixture(scope="module")
def at():
    pytest.importorskip("accelerate")
    return _example("accelerate_train")


@pytest.mark.parametrize("mode", ["split", "dispatch"])
def test_accelerate_in_one_process(at, tmp_path, mode):
    from accelerate import Accelerator

    urls = at.build(tmp_path)
    summary = at.train(Accelerator(cpu=True), urls, str(tmp_path / "store"), mode)
    _check_epochs(summary)
    _check_report(summary["report"])
    store = dl.ProfileStore(str(tmp_path / "store"))
    ds = dl.DriftDataset(urls, store=store, reference="clean", policy="skip")
    ds = ds.shuffle(1000).decode().to_tuple("__key__", "x.npy", "cls").batched(at.BATCH)
    ds = ds.map(at.to_tensors)
    for epoch in (0, 1):  # trained on this epoch's order (a prepared loader sets it itself)
        assert summary["ranks"][0]["seen"][str(epoch)] == _ids(ds, epoch)


@pytest.mark.parametrize("mode", ["split", "dispatch"])
def test_accelerate_on_two_cpu_processes(at, tmp_path, mode):
    out = tmp_path / "summary.json"
    script = str(EXAMPLES / "accelerate_train.py")
    stdout = _run([*_torchrun(), script, "--mode", mode, "--json", str(out)])
    assert "samples per process [2000, 2000], steps [32, 32]" in stdout
    summary = json.loads(out.read_text())
    assert summary["processes"] == 2 and len(summary["ranks"]) == 2
    _check_epochs(summary)
    _check_report(summary["report"])
