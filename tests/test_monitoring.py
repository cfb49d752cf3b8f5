"""Drift where people watch training: flat report rows, TensorBoard and Lightning logging,
read back with TensorBoard's own event reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloader import DriftDataset
from driftloader.monitoring import DriftReport, log_drift

from .conftest import write_gated_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return write_gated_corpus(tmp_path_factory.mktemp("monitoring"), [150], drifted=1)


def _dataset(corpus: dict) -> DriftDataset:
    urls = corpus["clean"] + corpus["drifted"]
    return DriftDataset(urls, store=corpus["store"], reference="ref", policy="skip", seed=0)


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (path,) = {p.parent for p in Path(folder).rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _text(events, tag: str) -> str:
    (event, *_) = events.Tensors(tag)
    return event.tensor_proto.string_val[0].decode()


def test_drift_report_rows_are_flat_print_as_a_table_and_make_a_dataframe(corpus):
    import pandas as pd

    ds = _dataset(corpus)
    assert sum(1 for _ in ds) == 150
    report = DriftReport(ds.drift_report())
    assert all(not isinstance(v, (dict, list)) for row in report for v in row.values())
    table = str(report).splitlines()
    assert table[0].split()[:4] == ["epoch", "shard", "action", "drifted"]
    (drifted,) = [line for line in table if "drift-0.tar" in line]
    assert "skipped" in drifted and "yes" in drifted and "x.npy[" in drifted
    assert DriftReport(report) == report  # flat rows stay as they are
    assert str(ds.drift_report()) == str(report)  # print(ds.drift_report()) shows the table
    assert ds.drift_report().flat() == report
    frame = pd.DataFrame(report)
    assert len(frame) == 2 and frame.loc[frame["drifted"], "shard"].tolist() == ["drift-0.tar"]
    assert frame["score"].dtype == float and frame["top_feature"].notna().sum() == 1


def test_log_drift_writes_scalars_and_tables_tensorboard_reads_back(corpus, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    ds = _dataset(corpus)
    for _ in ds:
        pass
    writer = SummaryWriter(str(tmp_path / "run"))
    scalars = log_drift(writer, ds, step=7)
    writer.close()
    events = _events(tmp_path / "run")

    def value(tag: str) -> float:
        (event,) = events.Scalars(f"drift/{tag}")
        assert event.step == 7
        return event.value

    assert (value("shards/read"), value("shards/skipped"), value("shards/excluded")) == (1, 1, 0)
    assert value("shards/drifted") == 1 and value("samples/passed") == 150
    assert value("samples/effective") == 150
    assert value("score/drift-0.tar") >= 1 and value("score/max") == value("score/drift-0.tar")
    (feature,) = [t for t in events.Tags()["scalars"] if t.startswith("drift/feature/")]
    assert value(feature[len("drift/") :]) == 1 and feature[len("drift/") :] in scalars
    assert "drift-0.tar" in _text(events, "drift/shards/text_summary")
    assert feature.rsplit("/", 1)[1] in _text(events, "drift/features/text_summary")


def test_lightning_callback_logs_drift_every_epoch(corpus, tmp_path):
    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger

    from driftloader import DriftCallback

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(64, 10)

        def training_step(self, batch, _):
            x, y = batch
            x = torch.as_tensor(np.asarray(x))
            return torch.nn.functional.cross_entropy(self.layer(x), torch.as_tensor(y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    ds = _dataset(corpus)
    loader = torch.utils.data.DataLoader(
        ds.decode().to_tuple("x.npy", "cls").batched(50), batch_size=None
    )
    trainer = L.Trainer(
        max_epochs=2,
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        callbacks=[DriftCallback(ds)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), loader)
    events = _events(tmp_path / "tb")
    drifted = events.Scalars("drift/shards/drifted")
    assert [e.value for e in drifted] == [1.0, 1.0]  # one point per epoch
    assert [e.value for e in events.Scalars("drift/samples/passed")] == [150.0, 150.0]
    assert "drift-0.tar" in _text(events, "drift/shards/text_summary")
