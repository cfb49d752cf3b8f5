"""Which failed requests are asked again, and after how long: resets, timeouts, 5xx and
throttling answers (S3's SlowDown, a CDN's or a hub's 429), after a server's ``Retry-After``;
and what to change when the storage kept asking to slow down."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime

from .errors import ShardReadError

_TRANSIENT_NAMES = {
    "ClientPayloadError",
    "ClientConnectionError",
    "ServerDisconnectedError",
    "ClientOSError",
    "ServerTimeoutError",
    "FSTimeoutError",
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ResponseStreamingError",
    "IncompleteRead",
    "IncompleteReadError",
    "HTTPClientError",
    "ProtocolError",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "TooManyRequests",
}
_LATER = frozenset({408, 429})  # request timeout, too many requests: asked again, later
MAX_RETRY_AFTER_S = 60.0  # the longest wait a server's Retry-After is followed for


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: resets, timeouts, 5xx and throttling answers (429: a
    CDN's or a hub's rate limit, as S3's SlowDown is a 503)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, ShardReadError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    code, status = _code_and_status(exc)
    return code in _TRANSIENT_CODES or transient_status(status)


def transient_status(status: int) -> bool:
    """Whether an HTTP status is asked again: 5xx, 408, 429."""
    return status >= 500 or status in _LATER


def _code_and_status(exc: BaseException) -> tuple[str | None, int]:
    """An answer's error code (botocore's ``ClientError`` shape, else None) and HTTP status
    (0 when it has none)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return response.get("Error", {}).get("Code"), int(status or 0)
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    return None, status if isinstance(status, int) else 0


def retry_after(exc: BaseException) -> float:
    """The seconds a refusal's ``Retry-After`` asked to wait (seconds or an HTTP date), at
    most ``MAX_RETRY_AFTER_S``; 0 when it said nothing."""
    value = getattr(exc, "retry_after", None)
    headers = getattr(exc, "headers", None)
    if value is None and headers is not None:
        value = headers.get("Retry-After")
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(str(value)).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def slow_down_hint(e: BaseException) -> str:
    """What to change when the storage kept refusing for load (429, 503, SlowDown)."""
    code, status = _code_and_status(e)
    if code not in ("SlowDown", "Throttling", "TooManyRequests") and status not in (429, 503):
        return ""
    return (
        "; the storage kept asking to slow down: ask less at once (fewer DataLoader workers, "
        "ReadOptions(max_requests=...)) or retry longer (ReadOptions(retries=..., backoff=...))"
    )
