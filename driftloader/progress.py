"""The one progress reporter of long operations: a tqdm bar on a terminal, sparse lines in logs.

On a terminal the bar is tqdm's (the library people know), rewritten in place and cleared when
the work ends, leaving only the final line. Elsewhere (a log file, CI) a plain line is appended
every ``LOG_INTERVAL`` seconds, so logs stay short. Disabled, it prints nothing.

Library functions report through ``track(items, "checked")``; it shows nothing unless the caller
turned progress on with ``reporting()`` (the ``driftloader`` command does, unless ``--quiet``)::

    with reporting():
        for shard in track(shards, "checked"):
            ...
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

LOG_INTERVAL = 30.0  # seconds between progress lines in logs
TERMINAL_INTERVAL = 0.5  # seconds between redraws on a terminal

T = TypeVar("T")

_REPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "driftloader_progress", default=False
)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """Progress of ``total`` items done under ``desc`` (``"profiled 3/8 shards"``).

    ``update(done, samples=...)`` sets the count; ``close(line)`` ends the bar and prints
    ``line`` (a summary) when enabled. Usable as a context manager.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "shards",
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_terminal(self.stream)
        self.start = time.monotonic()
        self.last = self.start
        self.done, self.samples = 0, None
        self._bar = None
        if enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit.rstrip("s") or unit,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                mininterval=TERMINAL_INTERVAL,
            )

    def update(self, done: int, samples: int | None = None, force: bool = False) -> None:
        """``done`` items finished so far (and ``samples`` read, when known)."""
        self.done, self.samples = done, samples
        if not self.enabled:
            return
        if self._bar is not None:
            if samples is not None:
                self._bar.set_postfix_str(f"{samples:,} samples", refresh=False)
            self._bar.update(done - self._bar.n)
            if force:
                self._bar.refresh()
            return
        now = time.monotonic()
        if force or now - self.last >= LOG_INTERVAL:
            self.last = now
            self._write(self.line())

    def advance(self, n: int = 1) -> None:
        """``n`` more items finished."""
        self.update(self.done + n, self.samples)

    def line(self) -> str:
        """``"profiled 3/8 shards, 1,200 samples, 950 samples/s"``."""
        text = f"{self.desc} {self.done}/{self.total} {self.unit}"
        if self.samples is not None:
            rate = self.samples / max(time.monotonic() - self.start, 1e-9)
            text += f", {self.samples:,} samples, {rate:,.0f} samples/s"
        return text

    def close(self, final: str | None = None) -> None:
        """Clear the bar; print ``final`` (a summary line) when enabled."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled and final is not None:
            self._write(final)

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def reporting(enabled: bool = True) -> Iterator[None]:
    """Within this block, ``track`` shows progress (on stderr) when ``enabled``."""
    token = _REPORTING.set(enabled)
    try:
        yield
    finally:
        _REPORTING.reset(token)


def active() -> bool:
    """True inside ``reporting()``: long operations should show progress."""
    return _REPORTING.get()


def track(
    items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "shards"
) -> Iterator[T]:
    """Yield ``items``, showing progress under ``desc`` when inside ``reporting()``."""
    if not active():
        yield from items
        return
    if total is None:
        items = list(items)
        total = len(items)
    with Progress(total, desc, unit=unit) as bar:
        for item in items:
            yield item
            bar.advance()


__all__ = ["LOG_INTERVAL", "Progress", "active", "reporting", "track"]
