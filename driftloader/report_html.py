"""The HTML report's small shared pieces: escaping, numbers read from stored rows, times, and
figures as inline PNGs. ``report.py``, ``report_images.py`` and ``report_serving.py`` use them."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from typing import Any


def escape(value: Any) -> str:
    """``value`` as escaped HTML text (``None`` as nothing)."""
    return html.escape("" if value is None else str(value), quote=True)


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def when(ts: float | None) -> str:
    """A UNIX time as ``YYYY-MM-DD HH:MM:SS UTC``; nothing for None or a non-finite time."""
    if ts is None or not math.isfinite(ts):
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def matplotlib_classes():
    """(Figure, FigureCanvasAgg); no pyplot, so no global backend state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the HTML report needs matplotlib: pip install 'driftloader[report]'"
        ) from e
    return Figure, FigureCanvasAgg


def png(fig: Any) -> str:
    """The figure as a base64 PNG."""
    _, canvas_cls = matplotlib_classes()
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img(data: str | None, alt: str) -> str:
    """An inline ``<img>`` of a base64 PNG, or a note when there was nothing to draw."""
    if data is None:
        return f'<p class="note">no plot for {escape(alt)} (no data to draw)</p>'
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
