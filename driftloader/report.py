"""An HTML drift report: one self-contained file (inline CSS, plots as base64 PNG, no script).

What it shows, for one reference:

* a summary: the reference (samples, shards, created) and how many shards drifted;
* the drift score of every shard over time (decision time, else profile creation) and by source;
* a table of shards sorted by score: decision, top features, version, validation;
* for the most drifted features, the reference's distribution against the most drifted shards'
  (density and CDF from the quantile sketches; category shares for categorical features);
* validation failures recorded in the catalog;
* serving windows stored by ``ServingMonitor``, over time beside the shards and in a table,
  each labelled with its preprocessing (``report_serving.py``).

Shard results come from the catalog when it holds one for this reference; other stored profiles
are compared with ``drift.compare``. Only the few profiles plotted are loaded, so a report over
thousands of shards with recorded results stays fast. Everything taken from data (URLs, feature
names, sources, categories) is HTML-escaped, and URLs are shown without credentials.

Example::

    from driftloader.report import write_report
    write_report("report.html", ProfileStore("s3://bucket/drift"), "v1")
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from .catalog import CatalogRow
from .drift import DriftConfig, compare
from .errors import FingerprintMismatch
from .profile import Profile
from .progress import track
from .report_html import escape, finite_float, img, matplotlib_classes, png, when
from .report_images import content_sections
from .report_serving import serving_section
from .sources import Shard, expand_urls, protocol_of, redact, stat_shards
from .store import ProfileStore, first_url, unique_shards, url_hash

_SHARDS_PER_FEATURE = 3  # shards overlaid on the reference in each feature plot
_CATEGORIES = 10  # categories shown per categorical feature
_SOURCES = 10  # sources with their own colour; the rest are "other"
_BINS = 30
_TOP_IN_TABLE = 3


@dataclass
class ShardRow:
    """One shard-version in the report: its result against the reference and its metadata."""

    url: str
    version: str | None
    source: str | None = None
    n: int | None = None
    time: float | None = None
    score: float | None = None
    drifted: bool | None = None
    action: str = ""
    top: list[dict] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    error: str | None = None


# ---------------------------------------------------------------------------------- collecting


def _row_from_catalog(row: CatalogRow, reference: str) -> ShardRow:
    """A ShardRow with the catalog's recorded result (if it is for ``reference``)."""
    mine = row.reference == reference
    validation = row.validation if row.validation_reference in (None, reference) else None
    return ShardRow(
        url=redact(row.url),
        version=row.version,
        source=row.source,
        n=row.n,
        time=finite_float(row.decided if mine else None) or finite_float(row.created),
        score=finite_float(row.score) if mine else None,
        drifted=row.drifted if mine else None,
        action=(row.action or "") if mine else "",
        top=[t for t in row.top or [] if isinstance(t, dict)] if mine else [],
        validation=[str(v) for v in validation or []],
    )


def _compare_stored(
    out: ShardRow, profile: Profile | None, ref: Profile, config: DriftConfig | None
) -> None:
    """Fill ``out`` by comparing its stored profile with the reference (no result recorded)."""
    if profile is None:
        out.error = "no stored profile at this version"
        return
    try:
        result = compare(profile, ref, config)
    except FingerprintMismatch:
        out.error = "featurized differently from the reference"
        return
    out.score, out.drifted, out.n = float(result.score), result.drifted, profile.n
    out.source = out.source or profile.source
    out.time = out.time or profile.created
    out.action = out.action or "compared"
    out.top = [f.to_dict() for f in result.top(5)]


def _selected_rows(
    catalog: list[CatalogRow], shards: list | None, reference: str
) -> list[tuple[str, str | None, CatalogRow]]:
    """(url, version, catalog row) of the shards to report on."""
    if shards is None:
        keep = [
            r
            for r in catalog
            if reference in (r.reference, r.validation_reference) or r.fingerprint is not None
        ]
        return [(r.url, r.version, r) for r in keep]
    index = {(url_hash(r.url), r.version): r for r in catalog}
    return [
        (s.url, s.version, index.get((url_hash(s.url), s.version)) or CatalogRow(s.url, s.version))
        for s in shards
    ]


def shard_rows(
    store: ProfileStore,
    reference: str,
    urls: str | Sequence[str] | None = None,
    storage_options: dict | None = None,
    config: DriftConfig | None = None,
    compare_stored: bool = True,
) -> list[ShardRow]:
    """The report's rows, sorted by score (highest first; shards without a result last).

    ``urls`` restricts the report to those shards at their current versions; otherwise every
    catalog row with a result for ``reference`` and every stored shard profile is included.
    Shards without a recorded result for ``reference`` are compared from their stored profiles
    (~6 ms each: load and compare) when ``compare_stored``, else listed without a score.
    """
    ref = store.get_reference(reference)
    return _rows(store, ref, reference, urls, storage_options, config, compare_stored)


def _rows(
    store: ProfileStore,
    ref: Profile,
    reference: str,
    urls: str | Sequence[str] | None,
    storage_options: dict | None,
    config: DriftConfig | None,
    compare_stored: bool = True,
    catalog: list[CatalogRow] | None = None,
) -> list[ShardRow]:
    shards = None
    if urls is not None:
        if storage_options is None and protocol_of(first_url(urls)) == protocol_of(store.url):
            storage_options = store.storage_options
        shards = unique_shards(stat_shards(expand_urls(urls, storage_options), storage_options))
    rows, unscored = [], []
    catalog = store.catalog() if catalog is None else catalog
    for url, version, row in _selected_rows(catalog, shards, reference):
        if (row.url, row.version) != (url, version):
            row = dataclasses.replace(row, url=url, version=version)
        out = _row_from_catalog(row, reference)
        if out.score is None:
            if row.fingerprint not in (None, ref.fingerprint):
                out.error = "featurized differently from the reference"
            elif not compare_stored:
                out.error = f"no result recorded for {reference}"
            else:
                unscored.append(out)
        rows.append(out)
    # their stored profiles read in batches: one at a time, right after a reference was built
    # (no shard checked yet), 100k shards at 40 ms took over an hour
    stored = [Shard(out.url, out.version) for out in unscored]
    profiles = chain.from_iterable(store.fetch_profile_chunks(stored, ref.fingerprint))
    for out, profile in track(zip(unscored, profiles), "compared", total=len(unscored)):
        _compare_stored(out, profile, ref, config)
    return sorted(rows, key=lambda r: (r.score is None, -(r.score or 0.0), r.url))


# ---------------------------------------------------------------------------------- top features


def top_features(rows: list[ShardRow], k: int) -> list[str]:
    """The ``k`` features drifted in most shards (ties: highest score), from the rows' top
    lists; a feature that drifted in no shard is not listed."""
    drifted: dict[str, int] = {}
    best: dict[str, float] = {}
    for row in rows:
        for t in row.top:
            name = str(t.get("name"))
            drifted[name] = drifted.get(name, 0) + bool(t.get("drifted"))
            best[name] = max(best.get(name, 0.0), finite_float(t.get("score")) or 0.0)
    ranked = sorted(best, key=lambda n: (-drifted[n], -best[n], n))
    return [n for n in ranked if drifted[n]][:k]  # only features that drifted somewhere


def _shards_for(feature: str, rows: list[ShardRow], k: int) -> list[ShardRow]:
    """The ``k`` shards where ``feature`` scored highest (only those where it drifted, if any)."""
    scored = []
    for row in rows:
        for t in row.top:
            if t.get("name") == feature:
                score = finite_float(t.get("score")) or 0.0
                scored.append((not t.get("drifted"), -score, row.url, row))
    scored.sort(key=lambda s: s[:3])
    if scored and not scored[0][0]:
        scored = [s for s in scored if not s[0]]
    return [s[-1] for s in scored[:k]]


# ---------------------------------------------------------------------------------- plotting


def _label(url: str, width: int = 40) -> str:
    """A short plot label for a name or URL: the last path segment, truncated, '$' as text."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or url
    name = name if len(name) <= width else name[: width - 1] + "\u2026"
    return name.replace("$", r"\$")  # a '$' pair would otherwise start matplotlib mathtext


def _source_groups(rows: list[ShardRow]) -> dict[str, list[ShardRow]]:
    """Rows by source; the largest ``_SOURCES`` sources each on their own, the rest "other"."""
    groups: dict[str, list[ShardRow]] = {}
    for row in rows:
        groups.setdefault(row.source or "(no source)", []).append(row)
    ordered = sorted(groups, key=lambda s: (-len(groups[s]), s))
    out = {s: groups[s] for s in ordered[:_SOURCES]}
    rest = [r for s in ordered[_SOURCES:] for r in groups[s]]
    if rest:
        out["(other sources)"] = rest
    return out


def overview_plot(rows: list[ShardRow]) -> str | None:
    """Base64 PNG: score over time coloured by source, and score by source."""
    scored = [r for r in rows if r.score is not None]
    if not scored:
        return None
    figure_cls, _ = matplotlib_classes()
    fig = figure_cls(figsize=(11, 3.8), layout="constrained")
    ax_t, ax_s = fig.subplots(1, 2, width_ratios=[2, 1])
    groups = _source_groups(scored)
    for i, (source, members) in enumerate(groups.items()):
        times = [_dt.datetime.fromtimestamp(r.time or 0, _dt.timezone.utc) for r in members]
        scores = [r.score for r in members]
        ax_t.scatter(times, scores, s=12, alpha=0.7, color=f"C{i % 10}", label=_label(source, 30))
        ax_s.scatter(
            np.full(len(scores), i) + _jitter(len(scores)),
            scores,
            s=8,
            alpha=0.6,
            color=f"C{i % 10}",
        )
    for ax in (ax_t, ax_s):
        ax.axhline(1.0, color="crimson", lw=1, ls="--")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel("drift score (>= 1: drifted)")
    ax_t.set_xlabel("decision time (else profile created), UTC")
    ax_t.set_title("drift score per shard over time")
    fig.autofmt_xdate()
    ax_s.set_xticks(range(len(groups)), [_label(s, 18) for s in groups], rotation=30, ha="right")
    ax_s.set_title("by source")
    if len(groups) > 1:
        ax_t.legend(fontsize=7, loc="upper left")
    return png(fig)


def _jitter(n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.25, 0.25, n)


def _numeric_range(sketches: list) -> tuple[float, float] | None:
    """A plotting range covering 0.5%-99.5% of every sketch."""
    ends = np.array([q.quantile([0.005, 0.995]) for q in sketches if q.count])
    if not ends.size or not np.isfinite(ends).all():
        return None
    lo, hi = float(ends[:, 0].min()), float(ends[:, 1].max())
    return (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)


def numeric_plot(feature: str, ref: Profile, shards: list[Profile]) -> str | None:
    """Base64 PNG: density (from CDF differences) and CDF of the reference and the shards."""
    sketches = [p.numeric(feature)[1] for p in [ref, *shards]]
    span = _numeric_range(sketches)
    if span is None:
        return None
    edges = np.linspace(*span, _BINS + 1)
    grid = np.linspace(*span, 200)
    figure_cls, _ = matplotlib_classes()
    fig = figure_cls(figsize=(10, 3), layout="constrained")
    ax_d, ax_c = fig.subplots(1, 2)
    for i, (profile, q) in enumerate(zip([ref, *shards], sketches)):
        if not q.count:
            continue
        label = "reference" if i == 0 else _label(profile.url or "?")
        style = {"color": "black", "lw": 2} if i == 0 else {"color": f"C{i - 1}", "lw": 1.2}
        density = np.diff(q.cdf(edges)) / np.diff(edges)
        ax_d.stairs(density, edges, label=label, **style)
        ax_c.plot(grid, q.cdf(grid), label=label, **style)
    ax_d.set_title(f"{_label(feature, 60)}: density")
    ax_c.set_title("CDF")
    ax_c.legend(fontsize=7)
    return png(fig)


def categorical_plot(feature: str, ref: Profile, shards: list[Profile]) -> str | None:
    """Base64 PNG: shares of the most frequent categories, reference vs shards."""
    counts = [p.categorical(feature) for p in [ref, *shards]]
    shares = [{k: v / max(c.present, 1) for k, v in c.counts().items()} for c in counts]
    total: dict[str, float] = {}
    for s in shares:
        for k, v in s.items():
            total[k] = total.get(k, 0.0) + v
    cats = sorted(total, key=lambda k: (-total[k], k))[:_CATEGORIES]
    if not cats:
        return None
    figure_cls, _ = matplotlib_classes()
    fig = figure_cls(figsize=(10, 3), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(shares)
    for i, (profile, s) in enumerate(zip([ref, *shards], shares)):
        label = "reference" if i == 0 else _label(profile.url or "?")
        color = "black" if i == 0 else f"C{i - 1}"
        x = np.arange(len(cats)) + i * width
        ax.bar(x, [s.get(c, 0.0) for c in cats], width, label=label, color=color, alpha=0.8)
    ax.set_xticks(
        np.arange(len(cats)) + 0.4 - width / 2, [_label(c, 16) for c in cats], rotation=30
    )
    ax.set_ylabel("share of present values")
    ax.set_title(f"{_label(feature, 60)}: top categories")
    ax.legend(fontsize=7)
    return png(fig)


# ---------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
tr.drifted td{background:#fde8e8}
td.url{font-family:monospace;word-break:break-all;max-width:420px}
.summary td{border:none;padding:2px 12px 2px 0}
img{max-width:100%}
.note{color:#666;font-size:13px}
"""


def _summary(reference: str, ref: Profile, rows: list[ShardRow]) -> str:
    drifted = sum(bool(r.drifted) for r in rows)
    items = [
        ("reference", reference),
        ("reference samples", f"{ref.n:,}"),
        ("reference shards", ref.meta.get("count", "")),
        ("reference created", when(ref.created)),
        ("features", len(ref.kinds)),
        ("shards in report", len(rows)),
        ("drifted shards", drifted),
        ("shards without a result", sum(r.score is None for r in rows)),
        ("shards failing validation", sum(bool(r.validation) for r in rows)),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in items)
    return f'<table class="summary" id="summary">{body}</table>'


def _top_cell(row: ShardRow) -> str:
    parts = []
    for t in row.top[:_TOP_IN_TABLE]:
        effect = finite_float(t.get("effect"))
        text = (
            f"{t.get('name')} ({t.get('metric')} {effect:.3g})"
            if effect is not None
            else str(t.get("name"))
        )
        parts.append(f"<b>{escape(text)}</b>" if t.get("drifted") else escape(text))
    return "<br>".join(parts)


def _table_row(i: int, row: ShardRow) -> str:
    score = "" if row.score is None else f"{row.score:.3g}"
    drifted = "" if row.drifted is None else ("yes" if row.drifted else "no")
    action = row.action or (row.error or "")
    cells = [
        escape(i),
        f'<td class="url">{escape(row.url)}</td>',
        escape(row.version),
        escape(row.source),
        escape("" if row.n is None else row.n),
        escape(score),
        escape(drifted),
        escape(action),
        _top_cell(row),
        escape(when(row.time)),
        escape(len(row.validation) if row.validation else ""),
    ]
    body = "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells)
    cls = ' class="drifted"' if row.drifted else ""
    return f"<tr{cls}>{body}</tr>"


def _table(rows: list[ShardRow]) -> str:
    heads = ["#", "shard", "version", "source", "n", "score", "drifted", "action", "top features"]
    heads += ["time (UTC)", "validation failures"]
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    body = "".join(_table_row(i + 1, r) for i, r in enumerate(rows))
    return f'<table id="shards"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _validation(rows: list[ShardRow]) -> str:
    failing = [r for r in rows if r.validation]
    if not failing:
        return '<p class="note">no validation failures recorded.</p>'
    items = "".join(
        f'<li><span class="url">{escape(r.url)}</span> ({escape(r.version)})<ul>'
        + "".join(f"<li>{escape(v)}</li>" for v in r.validation)
        + "</ul></li>"
        for r in failing
    )
    return f'<ul id="validation">{items}</ul>'


def _feature_section(feature: str, ref: Profile, shown: list[ShardRow], cache: dict) -> str:
    """One feature: which shards (``shown``: ``_shards_for``), and the reference-vs-shard plot
    of their profiles (in ``cache``, read by ``_plotted_profiles``)."""
    kind = ref.kinds.get(feature)
    title = f"<h3>{escape(feature)} <small>({escape(kind or 'not in reference')})</small></h3>"
    if kind not in ("numeric", "categorical"):
        return title + '<p class="note">no distribution plot for this kind of feature.</p>'
    profiles = []
    for row in shown:
        p = cache[(row.url, row.version)]
        if p is not None and p.kinds.get(feature) == kind:
            profiles.append(p)
    plot = numeric_plot if kind == "numeric" else categorical_plot
    names = ", ".join(escape(redact(p.url or "?")) for p in profiles) or "none loaded"
    return (
        title + f'<p class="note">shards: {names}</p>' + img(plot(feature, ref, profiles), feature)
    )


def _plotted_profiles(
    store: ProfileStore, ref: Profile, shown: dict[str, list[ShardRow]]
) -> dict[tuple[str, str | None], Profile | None]:
    """The profiles the feature plots overlay (``shown``: the rows each feature shows), by
    (url, version), read in one batch: one after another they were up to
    ``_SHARDS_PER_FEATURE`` round trips a feature."""
    plotted = [f for f in shown if ref.kinds.get(f) in ("numeric", "categorical")]
    keys = {(r.url, r.version): None for f in plotted for r in shown[f]}
    shards = [Shard(url, version) for url, version in keys]
    return dict(zip(keys, store.fetch_profiles(shards, ref.fingerprint)))


def render_report(
    store: ProfileStore,
    reference: str,
    urls: str | Sequence[str] | None = None,
    storage_options: dict | None = None,
    top_features: int = 6,
    config: DriftConfig | None = None,
    compare_stored: bool = True,
) -> str:
    """One self-contained HTML document on the shards' drift from reference ``reference``.

    ``urls`` restricts it to those shards (brace patterns, globs, manifests) at their current
    versions; by default every shard in the store's catalog is included. ``top_features``
    features get reference-vs-shard plots. Results recorded in the catalog for ``reference``
    are used as they are; other stored profiles are compared when ``compare_stored``.
    """
    if isinstance(top_features, bool) or not isinstance(top_features, int) or top_features < 0:
        raise ValueError(f"top_features must be an int >= 0, got {top_features!r}")
    ref = store.get_reference(reference)
    catalog = store.catalog()
    rows = _rows(store, ref, reference, urls, storage_options, config, compare_stored, catalog)
    overview = img(overview_plot(rows), "drift score over time and by source")
    shown = {f: _shards_for(f, rows, _SHARDS_PER_FEATURE) for f in _top_names(rows, top_features)}
    cache = _plotted_profiles(store, ref, shown)
    features = [_feature_section(f, ref, picked, cache) for f, picked in shown.items()]
    serving = serving_section(catalog, reference, rows)  # report_serving.py
    features.append(content_sections(store, ref, rows, cache))  # report_images.py
    return _document(reference, ref, rows, overview, features, serving)


def _top_names(rows: list[ShardRow], k: int) -> list[str]:
    return top_features(rows, k) if k else []


def _document(
    reference: str,
    ref: Profile,
    rows: list[ShardRow],
    overview: str,
    features: list[str],
    serving: str = "",
) -> str:
    title = f"driftloader report: reference {escape(reference)}"
    feature_html = "".join(features) or '<p class="note">no feature moved.</p>'
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1>"
        f'<p class="note">generated {escape(when(_now()))}</p>'
        f"<h2>Summary</h2>{_summary(reference, ref, rows)}"
        f"<h2>Drift score over time and by source</h2>{overview}"
        f"<h2>Shards by score</h2>{_table(rows)}{serving}"
        f"<h2>Most drifted features</h2>{feature_html}"
        f"<h2>Validation failures</h2>{_validation(rows)}"
        "</body></html>\n"
    )


def _now() -> float:
    return _dt.datetime.now(_dt.timezone.utc).timestamp()


def write_report(
    path: str | os.PathLike,
    store: ProfileStore,
    reference: str,
    urls: str | Sequence[str] | None = None,
    storage_options: dict | None = None,
    top_features: int = 6,
    config: DriftConfig | None = None,
    compare_stored: bool = True,
) -> str:
    """Render the report and write it to ``path`` (a local path or fsspec URL); returns the path."""
    document = render_report(
        store, reference, urls, storage_options, top_features, config, compare_stored
    )
    target = os.fspath(path)
    if protocol_of(target) == "file":
        with open(target, "w", encoding="utf-8") as f:
            f.write(document)
    else:
        import fsspec

        with fsspec.open(target, "w", encoding="utf-8", **(storage_options or {})) as f:
            f.write(document)
    return target


__all__ = ["ShardRow", "render_report", "shard_rows", "top_features", "write_report"]
