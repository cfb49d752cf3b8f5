"""The serving section of the HTML report: ``ServingMonitor`` windows beside the training shards.

Windows are the catalog rows a monitor stored for the reference (``action`` "served", with
``start``, ``end``, ``window``, ``run`` and ``preprocessing``). The section holds a plot of the
drift score over time, training shards in grey and serving windows coloured by their
preprocessing fingerprint, and a table of windows in time order: window, start, end, n,
drifted, score, top features and preprocessing. Everything taken from data is HTML-escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .report_html import escape, finite_float, matplotlib_classes, png, when

SERVED = "served"
NO_PREPROCESSING = "(not given)"
TOP_IN_TABLE = 3
MAX_ROWS = 500  # the latest windows in the table; the plot shows all


@dataclass
class ServingWindow:
    """One stored serving window, as the report shows it."""

    url: str
    run: str | None
    window: int | None
    start: float | None
    end: float | None
    n: int | None
    drifted: bool | None
    score: float | None
    preprocessing: str | None
    top: list[dict] = field(default_factory=list)


def serving_windows(catalog: Iterable[Mapping[str, Any]], reference: str) -> list[ServingWindow]:
    """The serving windows stored for ``reference`` in ``catalog`` (catalog rows), by time."""
    windows = []
    for row in catalog:
        if row.get("action") != SERVED or row.get("reference") != reference:
            continue
        window = row.get("window")
        windows.append(
            ServingWindow(
                url=str(row.get("url")),
                run=row.get("run"),
                window=window if isinstance(window, int) else None,
                start=finite_float(row.get("start")),
                end=finite_float(row.get("end")),
                n=row.get("n"),
                drifted=row.get("drifted"),
                score=finite_float(row.get("score")),
                preprocessing=row.get("preprocessing"),
                top=[t for t in row.get("top") or [] if isinstance(t, Mapping)],
            )
        )
    return sorted(windows, key=lambda w: (w.start is None, w.start or 0.0, w.url))


def _label(window: ServingWindow) -> str:
    return window.preprocessing if window.preprocessing is not None else NO_PREPROCESSING


def _top(window: ServingWindow) -> str:
    names = [t for t in window.top if t.get("drifted")][:TOP_IN_TABLE]
    return "<br>".join(escape(t.get("name")) for t in names)


def _row(window: ServingWindow) -> str:
    drifted = "" if window.drifted is None else ("yes" if window.drifted else "no")
    cells = [
        escape(window.window),
        escape(when(window.start)),
        escape(when(window.end)),
        escape(window.n),
        escape(drifted),
        escape("" if window.score is None else f"{window.score:.3g}"),
        _top(window),
        f'<td class="preprocessing">{escape(_label(window))}</td>',
        f'<td class="url">{escape(window.run)}</td>',
    ]
    body = "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells)
    cls = ' class="drifted"' if window.drifted else ""
    return f"<tr{cls}>{body}</tr>"


def serving_table(windows: Sequence[ServingWindow]) -> str:
    """The windows' table (the latest ``MAX_ROWS``), in time order."""
    heads = ["window", "start", "end", "n", "drifted", "score", "top features"]
    heads += ["preprocessing", "run"]
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    shown = list(windows)[-MAX_ROWS:]
    body = "".join(_row(w) for w in shown)
    note = ""
    if len(shown) < len(windows):
        note = f'<p class="note">the latest {len(shown)} of {len(windows)} windows.</p>'
    return note + f'<table id="serving"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def serving_plot(windows: Sequence[ServingWindow], shards: Sequence[Any]) -> str | None:
    """Base64 PNG: drift score over time, training shards (rows with ``time`` and ``score``,
    not served) in grey, serving windows by preprocessing; None with nothing to draw."""
    scored = [w for w in windows if w.score is not None and w.end is not None]
    if not scored:
        return None
    figure_cls, _ = matplotlib_classes()
    fig = figure_cls(figsize=(11, 3.6), layout="constrained")
    ax = fig.subplots()
    training = [s for s in shards if s.action != SERVED and s.score is not None and s.time]
    if training:
        times = [dt.datetime.fromtimestamp(s.time, dt.timezone.utc) for s in training]
        ax.scatter(times, [s.score for s in training], s=10, color="0.6", label="training shards")
    labels = sorted({_label(w) for w in scored})
    for i, label in enumerate(labels):
        members = [w for w in scored if _label(w) == label]
        times = [dt.datetime.fromtimestamp(w.end, dt.timezone.utc) for w in members]
        text = "serving, preprocessing " + label.replace("$", r"\$")
        ax.scatter(times, [w.score for w in members], s=16, color=f"C{i % 10}", label=text)
    ax.axhline(1.0, color="crimson", lw=1, ls="--")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylabel("drift score (>= 1: drifted)")
    ax.set_xlabel("time (shards: decision or profile; windows: end), UTC")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return png(fig)


def serving_section(
    catalog: Iterable[Mapping[str, Any]], reference: str, shards: Sequence[Any]
) -> str:
    """The report's serving section (empty when no window was stored for ``reference``)."""
    windows = serving_windows(catalog, reference)
    if not windows:
        return ""
    drifted = sum(bool(w.drifted) for w in windows)
    labels = ", ".join(sorted({_label(w) for w in windows}))
    plot = serving_plot(windows, shards)
    image = (
        f'<img alt="serving windows and training shards over time" '
        f'src="data:image/png;base64,{plot}">'
        if plot
        else ""
    )
    return (
        "<h2>Serving windows</h2>"
        f'<p class="note">{len(windows)} windows stored by ServingMonitor, {drifted} drifted; '
        f"preprocessing: {escape(labels)}.</p>{image}{serving_table(windows)}"
    )


__all__ = ["ServingWindow", "serving_plot", "serving_section", "serving_table", "serving_windows"]
