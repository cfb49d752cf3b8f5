"""Drift where people watch training: readable report rows, TensorBoard and Lightning logging.

``DriftReport`` turns ``ds.drift_report()`` rows into flat rows (one value per column) that
print as a table and go straight into ``pandas.DataFrame(...)``. ``drift_scalars`` sums an
epoch's rows into the numbers worth plotting; ``log_drift(writer, ds, step)`` writes them and a
text table to a TensorBoard ``SummaryWriter`` (or anything with ``add_scalar`` / ``add_text``);
``DriftCallback(ds)`` does the same once per epoch for any Lightning logger::

    writer = torch.utils.tensorboard.SummaryWriter("runs/x")
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in loader: ...
        dl.log_drift(writer, ds, step=epoch)

    trainer = lightning.Trainer(callbacks=[dl.DriftCallback(ds)])
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

TABLE_COLUMNS = ("epoch", "shard", "action", "drifted", "score", "n", "ess", "top_features")
READ_ACTIONS = ("passed", "weighted", "resampled", "dropped after probe")
PASSED_ACTIONS = ("passed", "weighted", "resampled")
SKIPPED_ACTIONS = ("skipped", "dropped after probe")
TOP_SHOWN = 3  # drifted features named per shard in the flat row


def _top_text(top: Iterable[Mapping]) -> str:
    """``"x.npy[3] ks 0.85, cls chi2 0.3"``: the drifted features, most drifted first."""
    drifted = [t for t in top if isinstance(t, Mapping) and t.get("drifted")]
    return ", ".join(
        f"{t.get('name')} {t.get('metric')} {_number(t.get('effect')):.3g}"
        for t in drifted[:TOP_SHOWN]
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _schema_text(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "" if schema in (None, [], "") else str(schema)
    parts = []
    for key, value in schema.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        if value not in ("", None):
            parts.append(f"{key}: {value}")
    return "; ".join(parts)


def flatten_row(row: Mapping) -> dict:
    """One ``drift_report()`` row with only scalar values.

    ``top`` (a list of feature dicts) becomes ``top_feature`` and ``top_kind`` (the most drifted
    feature's name and kind, if any drifted) and ``top_features`` (``"name metric effect"`` of the first three drifted);
    ``schema`` becomes text; ``shard`` is the URL's file name. Other keys are kept as they are.
    """
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key == "top":
            drifted = [t for t in value or [] if isinstance(t, Mapping) and t.get("drifted")]
            flat["top_feature"] = drifted[0].get("name") if drifted else None
            flat["top_kind"] = drifted[0].get("kind") if drifted else None
            flat["top_features"] = _top_text(value or [])
        elif key == "schema":
            flat["schema"] = _schema_text(value)
        elif isinstance(value, (Mapping, list, tuple, set)):
            flat[key] = str(value)
        else:
            flat[key] = value
    if "url" in flat:  # flattening a flat row again changes nothing
        flat["shard"] = PurePosixPath(str(flat["url"]).replace("\\", "/")).name
    return flat


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(rows: Iterable[Mapping], columns: Iterable[str] = TABLE_COLUMNS) -> str:
    """Rows as an aligned plain-text table of ``columns`` (those present in some row)."""
    rows = list(rows)
    if not rows:
        return "(no drift decisions yet)"
    shown = [c for c in columns if any(c in r for r in rows)]
    cells = [[_cell(r.get(c)) for c in shown] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(shown)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(shown, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def markdown_table(rows: Iterable[Mapping], columns: Iterable[str] = TABLE_COLUMNS) -> str:
    """Rows as a Markdown table (TensorBoard's text tab renders it)."""
    rows = list(rows)
    if not rows:
        return "(no drift decisions yet)"
    shown = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)).replace("|", "/") for c in shown) + " |")
    return "\n".join(lines)


class DriftReport(list):
    """``drift_report()`` rows, flat (see ``flatten_row``): ``print(report)`` shows a table,
    ``pandas.DataFrame(report)`` gives one column per key."""

    def __init__(self, rows: Iterable[Mapping] = ()) -> None:
        super().__init__(flatten_row(r) for r in rows)

    def __str__(self) -> str:
        return format_table(self)

    def table(self, columns: Iterable[str] = TABLE_COLUMNS) -> str:
        """The rows as a plain-text table of ``columns``."""
        return format_table(self, columns)


class DriftRows(list):
    """What ``ds.drift_report()`` returns: its rows as they are (nested ``top`` feature dicts),
    printed as a table; ``flat()`` gives the ``DriftReport`` for ``pandas.DataFrame(...)``."""

    def __str__(self) -> str:
        return format_table(DriftReport(self))

    def flat(self) -> DriftReport:
        """One flat row per decision (``flatten_row``)."""
        return DriftReport(self)


# ------------------------------------------------------------------------------ scalars


def _latest_epoch(rows: list[Mapping]) -> Any:
    epochs = [r.get("epoch") for r in rows if isinstance(r.get("epoch"), int)]
    return max(epochs) if epochs else None


def epoch_rows(ds: Any, epoch: int | None = None) -> DriftReport:
    """The flat rows of ``epoch`` (default: the latest epoch with decisions) of ``ds``."""
    rows = list(ds.drift_report())
    if epoch is None:
        epoch = _latest_epoch(rows)
    return DriftReport(r for r in rows if epoch is None or r.get("epoch") == epoch)


def drift_scalars(rows: Iterable[Mapping], stats: Any = None) -> dict[str, float]:
    """An epoch's numbers worth plotting: shards read / skipped / excluded / drifted, samples
    passed on, their effective sample size, the highest score, and read errors from ``stats``
    (a ``ReadStats``) when given."""
    rows = [flatten_row(r) if "top" in r else dict(r) for r in rows]
    actions = Counter(r.get("action") for r in rows)
    passed = [r for r in rows if r.get("action") in PASSED_ACTIONS]
    scores = [_number(r.get("score")) for r in rows]
    out = {
        "shards/read": float(sum(actions[a] for a in READ_ACTIONS)),
        "shards/skipped": float(sum(actions[a] for a in SKIPPED_ACTIONS)),
        "shards/excluded": float(actions["excluded"]),
        "shards/drifted": float(sum(bool(r.get("drifted")) for r in rows)),
        "samples/passed": float(sum(int(r.get("n") or 0) for r in passed)),
        "samples/effective": float(sum(_number(r.get("ess", r.get("n") or 0)) for r in passed)),
        "score/max": max((s for s in scores if math.isfinite(s)), default=0.0),
    }
    if stats is not None:
        out["read/errors"] = float(getattr(stats, "errors", 0))
    return out


def top_features(rows: Iterable[Mapping], k: int = 5) -> list[tuple[str, int]]:
    """The ``k`` features most often the most drifted one of a drifted shard, with counts."""
    counts = Counter(
        r.get("top_feature") for r in rows if r.get("drifted") and r.get("top_feature")
    )
    return counts.most_common(k)


def drifted_scores(rows: Iterable[Mapping]) -> dict[str, float]:
    """``{shard file name: score}`` of the drifted shards."""
    return {
        str(r.get("shard") or r.get("url")): _number(r.get("score"))
        for r in rows
        if r.get("drifted")
    }


def log_drift(
    writer: Any, ds: Any, step: int, *, epoch: int | None = None, prefix: str = "drift"
) -> dict[str, float]:
    """Write one epoch's drift to a TensorBoard ``SummaryWriter`` at ``step``; returns the
    scalars written.

    Scalars under ``prefix/``: shards read / skipped / excluded / drifted, samples passed and
    their effective sample size, the highest score, each drifted shard's score
    (``score/<shard>``) and how often each top feature led a drifted shard
    (``feature/<name>``). Text: the epoch's rows as a table (``prefix/shards``) and the top
    features (``prefix/features``). ``epoch`` defaults to the latest epoch with decisions.
    """
    rows = epoch_rows(ds, epoch)
    scalars = _all_scalars(rows, getattr(ds, "stats", None))
    for tag, value in scalars.items():
        writer.add_scalar(f"{prefix}/{tag}", value, step)
    for tag, text in _texts(rows).items():
        writer.add_text(f"{prefix}/{tag}", text, step)
    return scalars


def _all_scalars(rows: DriftReport, stats: Any) -> dict[str, float]:
    scalars = drift_scalars(rows, stats)
    scalars.update({f"score/{name}": s for name, s in drifted_scores(rows).items()})
    scalars.update({f"feature/{name}": float(n) for name, n in top_features(rows)})
    return scalars


def _texts(rows: DriftReport) -> dict[str, str]:
    features = top_features(rows)
    feature_table = "| feature | drifted shards led |\n|---|---|\n" + "\n".join(
        f"| {name} | {n} |" for name, n in features
    )
    return {
        "shards": markdown_table(rows),
        "features": feature_table if features else "(no drifted feature)",
    }


# ----------------------------------------------------------------------------- Lightning


def _callback_class() -> type:
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:  # the older package name
        from pytorch_lightning.callbacks import Callback

    class DriftCallback(Callback):
        """Logs the dataset's drift at the end of every training epoch to every logger of the
        trainer: the scalars of ``log_drift`` through ``log_metrics`` (any Lightning logger),
        and the tables as text where the logger takes text (TensorBoard's ``add_text``, or a
        ``log_text`` method). Only rank 0 logs (Lightning's loggers are rank-zero anyway)."""

        def __init__(self, ds: Any, prefix: str = "drift") -> None:
            super().__init__()
            self.ds, self.prefix = ds, prefix

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            rows = epoch_rows(self.ds, None)
            scalars = _all_scalars(rows, getattr(self.ds, "stats", None))
            metrics = {f"{self.prefix}/{k}": v for k, v in scalars.items()}
            step = trainer.global_step
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
                _log_texts(logger, _texts(rows), self.prefix, step)

    return DriftCallback


def _log_texts(logger: Any, texts: dict[str, str], prefix: str, step: int) -> None:
    experiment = getattr(logger, "experiment", None)
    for tag, text in texts.items():
        if hasattr(experiment, "add_text"):
            experiment.add_text(f"{prefix}/{tag}", text, step)
        elif hasattr(logger, "log_text"):
            logger.log_text(key=f"{prefix}/{tag}", columns=["table"], data=[[text]], step=step)


_CALLBACK: type | None = None


def __getattr__(name: str) -> Any:
    """``DriftCallback`` is built on first use, so importing this module needs no Lightning."""
    global _CALLBACK
    if name == "DriftCallback":
        if _CALLBACK is None:
            _CALLBACK = _callback_class()
        return _CALLBACK
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # and DriftCallback, built on first use (see __getattr__)
    "DriftReport",
    "drift_scalars",
    "epoch_rows",
    "flatten_row",
    "format_table",
    "log_drift",
    "markdown_table",
    "top_features",
]
