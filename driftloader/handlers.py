"""What a bad shard or sample does: the package's one ``on_error`` table and its handlers.

A handler is webdataset's ``handler(exn) -> bool``: True to go on with the next item, False
to stop, or it raises. ``on_error=`` takes a name from ``ON_ERROR`` or such a handler.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

Handler = Callable[[Exception], bool]


def reraise_exception(exn: Exception) -> bool:
    """Error handler: stop by raising (the default)."""
    raise exn


def warn_and_continue(exn: Exception) -> bool:
    """Error handler: warn and go on with the next item."""
    warnings.warn(repr(exn), stacklevel=2)
    return True


def ignore_and_continue(exn: Exception) -> bool:
    """Error handler: go on silently (the caller still counts what was skipped)."""
    return True


ON_ERROR: dict[str, Handler] = {
    "raise": reraise_exception,
    "skip": ignore_and_continue,
    "warn": warn_and_continue,
}


def on_error_name(on_error: str, allowed: Sequence[str] = tuple(ON_ERROR)) -> str:
    """``on_error`` checked against the names ``allowed`` (of ``ON_ERROR``); ValueError else."""
    if not isinstance(on_error, str) or on_error not in allowed or on_error not in ON_ERROR:
        names = ", ".join(repr(name) for name in allowed)
        raise ValueError(f"on_error={on_error!r}; use one of {names}")
    return on_error


def error_handler(on_error: str | Handler) -> Handler:
    """The handler for ``on_error``: a name of ``ON_ERROR``, or a handler itself."""
    if callable(on_error):
        return on_error
    if not isinstance(on_error, str) or on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; use 'raise', 'skip', 'warn' or a handler")
    return ON_ERROR[on_error]


__all__ = [
    "ON_ERROR",
    "Handler",
    "error_handler",
    "ignore_and_continue",
    "on_error_name",
    "reraise_exception",
    "warn_and_continue",
]
