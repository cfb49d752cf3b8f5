"""The report's sections for image fields and joint drift: for each image field with a drifted
feature, its feature names, reference-vs-shard plots of brightness, contrast and sharpness and a
contact sheet of the thumbnails the reference and a drifted shard keep (``thumbnails.py``);
for each vector field with drifted joint projections, its label (``features.joint_labels``) and a
scatter of the reference's and a drifted shard's reservoir rows on the two original coordinates
that the drifted directions load most."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .features import JointOptions, joint_labels, joint_name_parts
from .features.joint import NUMERIC_GROUP
from .profile import Profile
from .report_html import escape, img, png
from .sources import Shard, redact
from .store import ProfileStore, recorded_featurizer

IMAGE_PLOTS = ("brightness", "contrast", "sharpness")
_SHARDS = 3  # drifted shards overlaid on the reference
_BINS = 30

ProfileOf = Callable[[Any], "Profile | None"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _drifted_names(row: Any) -> list[str]:
    return [str(t.get("name")) for t in row.top if t.get("drifted")]


def image_fields(reference: Profile) -> list[str]:
    """Fields with the image content features (``<field>.brightness``, ``.contrast``,
    ``.sharpness``) in ``reference``."""
    fields = {n[: -len(".brightness")] for n in reference.kinds if n.endswith(".brightness")}
    return sorted(
        f for f in fields if all(reference.kinds.get(f"{f}.{p}") == "numeric" for p in IMAGE_PLOTS)
    )


def image_plot(field: str, reference: Profile, shards: Sequence[Profile]) -> str:
    """Base64 PNG: the densities of ``field``'s brightness, contrast and sharpness, reference
    (black) vs ``shards``."""
    fig = _figure(12, 3)
    for ax, prop in zip(fig.subplots(1, len(IMAGE_PLOTS)), IMAGE_PLOTS):
        name = f"{field}.{prop}"
        sketches = [p.numeric(name)[1] for p in [reference, *shards] if name in p.kinds]
        ends = np.array([q.quantile([0.005, 0.995]) for q in sketches if q.count])
        ax.set_title(name)
        if not ends.size or not np.isfinite(ends).all():
            continue
        lo, hi = float(ends[:, 0].min()), float(ends[:, 1].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, _BINS + 1)
        for i, q in enumerate(sketches):
            if q.count:
                label = "reference" if i == 0 else redact(shards[i - 1].url or "?")[-30:]
                color = "black" if i == 0 else f"C{i - 1}"
                ax.stairs(np.diff(q.cdf(edges)) / np.diff(edges), edges, label=label, color=color)
        ax.legend(fontsize=7)
    return png(fig)


def image_section(
    field: str, reference: Profile, rows: Sequence[Any], profile_of: ProfileOf
) -> str:
    """The HTML of one image field: its features, and the plots for its drifted shards ("" when
    no shard drifted in it)."""
    profiles = [p for p in map(profile_of, drifted_in(field, rows)) if p is not None]
    if not profiles:
        return ""
    names = sorted(n for n in reference.kinds if n.startswith(f"{field}."))
    alt = f"{field}: brightness, contrast and sharpness, reference vs drifted shards"
    return (
        f"<h3>image field {escape(field)}</h3>"
        f'<p class="note">features: {escape(", ".join(names))}; drifted shards: '
        f"{escape(', '.join(redact(p.url or '?') for p in profiles))}</p>"
        + img(image_plot(field, reference, profiles), alt)
        + contact_sheet(field, reference, profiles[0])
    )


def drifted_in(field: str, rows: Sequence[Any]) -> list[Any]:
    """The rows (at most ``_SHARDS``) whose drift names a feature of the image ``field``."""
    prefix = f"{field}."
    return [row for row in rows if any(n.startswith(prefix) for n in _drifted_names(row))][:_SHARDS]


def contact_sheet(field: str, reference: Profile, shard: Profile) -> str:
    """The stored thumbnails of ``field`` (``thumbnails.py``): the reference's, then the
    drifted shard's, inline JPEGs."""
    lines = []
    for label, profile in (("reference", reference), (redact(shard.url or "?"), shard)):
        images = "".join(
            f'<img class="thumb" alt="{escape(field)} thumbnail, {escape(label)}" '
            f'src="data:image/jpeg;base64,{t}">'
            for t in profile.thumbnails.get(field, [])
        )
        lines.append(f'<p class="note">{escape(label)}: {images or "no thumbnails stored"}</p>')
    return f"<h4>{escape(field)}: thumbnails</h4>" + "".join(lines)


def joint_options(reference: Profile) -> JointOptions:
    """The joint options of the featurizer ``reference`` recorded (the defaults otherwise)."""
    options = getattr(recorded_featurizer(reference), "options", None)
    joint = getattr(options, "joint", None)
    return joint if isinstance(joint, JointOptions) else JointOptions()


def coordinates(group: str, reference: Profile, options: JointOptions) -> list[str]:
    """The original features a joint group projects, in projection order."""
    if group == NUMERIC_GROUP and options.numeric:
        return list(options.numeric)
    index = {c: c[len(group) + 1 : -1] for c in reference.reservoir_columns}
    columns = [c for c, i in index.items() if c.startswith(f"{group}[") and i.isdigit()]
    return sorted(columns, key=lambda c: int(index[c]))


def most_loaded(
    group: str, directions: Sequence[int], reference: Profile, options: JointOptions
) -> list[str]:
    """The two coordinates of ``group`` that its ``directions`` load most (sum of |weight|)."""
    names = coordinates(group, reference, options)
    if len(names) < 2:
        return []
    dirs = options.directions(group, len(names))[[j for j in directions if j < options.k]]
    loading = np.abs(dirs).sum(axis=0)
    return [names[i] for i in np.argsort(-loading, kind="stable")[:2]]


def joint_scatter(pair: list[str], reference: Profile, shard: Profile) -> str | None:
    """Base64 PNG: the reservoir rows of ``reference`` and ``shard`` on the two features."""
    points = []
    for p in (reference, shard):
        if p.reservoir is None or not all(c in p.reservoir_columns for c in pair):
            return None
        at = [p.reservoir_columns.index(c) for c in pair]
        points.append(p.reservoir.rows[:, at])
    fig = _figure(4.5, 4)
    ax = fig.subplots()
    ax.scatter(*points[0].T, s=6, color="black", alpha=0.5, label="reference")
    ax.scatter(*points[1].T, s=6, color="C3", alpha=0.5, label=redact(shard.url or "?")[-30:])
    ax.set_xlabel(pair[0])
    ax.set_ylabel(pair[1])
    ax.legend(fontsize=7)
    return png(fig)


def joint_section(reference: Profile, rows: Sequence[Any], profile_of: ProfileOf) -> str:
    """Joint drift grouped by vector field ("joint: x.npy (directions 3, 7)"), each with a
    scatter of the two most-loaded coordinates for its most drifted shard."""
    by_group = joint_groups(rows)
    if not by_group:
        return ""
    options = joint_options(reference)
    out = []
    for group, (dirs, row) in by_group.items():
        label = joint_labels(f"joint:{group}/dir{j}" for j in dirs)[0]
        pair = most_loaded(group, sorted(set(dirs)), reference, options)
        shard = profile_of(row)
        plot = joint_scatter(pair, reference, shard) if pair and shard is not None else None
        out.append(f"<h3>{escape(label)}</h3>")
        if plot is None:
            out.append('<p class="note">no reservoir rows to plot for this group.</p>')
            continue
        out.append(
            f'<p class="note">{escape(redact(row.url))}: reservoir rows on the two coordinates '
            f"the drifted directions load most</p>"
            + img(plot, f"{label}: scatter of {pair[0]} and {pair[1]}")
        )
    return "".join(out)


def joint_groups(rows: Sequence[Any]) -> dict[str, tuple[list[int], Any]]:
    """Each vector field with joint drift: its drifted directions and its most drifted row."""
    by_group: dict[str, tuple[list[int], Any]] = {}
    for row in sorted(rows, key=lambda r: -(r.score or 0.0)):
        for name in _drifted_names(row):
            parts = joint_name_parts(name)
            if parts is not None:
                dirs, _ = by_group.setdefault(parts[0], ([], row))
                dirs.append(parts[1])
    return by_group


def content_sections(
    store: ProfileStore, reference: Profile, rows: Sequence[Any], cache: dict
) -> str:
    """The image and joint sections of the report ("" when neither has anything to show);
    ``cache`` holds the shard profiles loaded by (url, version). The profiles the sections
    show are read in one batch: one after another they were a round trip each."""
    fields = image_fields(reference)
    wanted = [row for field in fields for row in drifted_in(field, rows)]
    wanted += [row for _, row in joint_groups(rows).values()]
    keys = {(r.url, r.version): None for r in wanted if (r.url, r.version) not in cache}
    if keys:
        shards = [Shard(url, version) for url, version in keys]
        cache.update(zip(keys, store.fetch_profiles(shards, reference.fingerprint)))

    def profile_of(row: Any) -> Profile | None:  # the sections ask for no other row
        return cache[(row.url, row.version)]

    images = "".join(image_section(f, reference, rows, profile_of) for f in fields)
    joint = joint_section(reference, rows, profile_of)
    out = ""
    if images:
        out += f"<h2>Image features</h2>{images}"
    if joint:
        out += f"<h2>Joint drift</h2>{joint}"
    return out


__all__ = ["content_sections", "image_fields", "image_plot", "joint_scatter", "most_loaded"]
