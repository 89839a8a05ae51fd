"""Retries with exponential backoff and full jitter, shared by the HTTP providers.

Only errors whose ``retryable`` attribute is true (:class:`~contextbox.errors.RateLimitError`,
:class:`~contextbox.errors.ProviderUnavailable`) are retried; anything else propagates at
once. A server's ``Retry-After`` (carried on the error as ``retry_after``) wins over the
computed backoff, capped at ``max_delay * 4`` so a hostile header cannot stall a run.

Also here: the HTTP-status → contextbox-error mapping both SDK-based providers share.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

from ..errors import (
    AuthError,
    ContextWindowError,
    ProviderError,
    ProviderUnavailable,
    RateLimitError,
)

log = logging.getLogger("contextbox")

T = TypeVar("T")
OnRetry = Callable[[int, float, Exception], None]

__all__ = ["OnRetry", "backoff_delay", "call_with_retries", "error_for_status", "parse_retry_after"]


def backoff_delay(attempt: int, base_delay: float, max_delay: float, retry_after: float | None = None) -> float:
    """The sleep before retry number ``attempt`` (1-based).

    Full jitter: uniform in ``[0, min(max_delay, base_delay * 2**(attempt-1))]``. A
    ``retry_after`` from the server is honoured instead, capped at ``max_delay * 4``.
    """
    if retry_after is not None and retry_after >= 0:
        return min(float(retry_after), max_delay * 4)
    ceiling = min(max_delay, base_delay * (2 ** max(0, attempt - 1)))
    return random.uniform(0.0, max(0.0, ceiling))


def call_with_retries(
    fn: Callable[[], T],
    *,
    max_retries: int,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn()``; on a retryable error, back off and try again up to ``max_retries`` times.

    ``on_retry(attempt, delay_s, error)`` is called before each sleep (attempt counts from 1).
    When the attempts are used up, the last error is re-raised unchanged.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - filtered on .retryable just below
            if not getattr(e, "retryable", False) or attempt >= max_retries:
                raise
            attempt += 1
            delay = backoff_delay(attempt, base_delay, max_delay, getattr(e, "retry_after", None))
            log.debug("retry %d/%d in %.2fs after %s: %s", attempt, max_retries, delay, type(e).__name__, e)
            if on_retry is not None:
                on_retry(attempt, delay, e)
            if delay > 0:
                sleep(delay)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP date) or ``retry-after-ms``."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


_CONTEXT_HINTS = (
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "input is too long",
    "reduce the length",
)


def error_for_status(
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    auth_hint: str = "",
    provider: str = "",
) -> ProviderError:
    """The contextbox error for an HTTP error ``status`` whose server message is ``message``."""
    where = f"{provider}: " if provider else ""
    if status in (401, 403):
        hint = f"; {auth_hint}" if auth_hint else ""
        return AuthError(f"{where}authentication failed (HTTP {status}): {message}{hint}", status=status)
    if status == 429:
        return RateLimitError(f"{where}rate limited (HTTP 429): {message}", status=status, retry_after=retry_after)
    if status >= 500 or status == 408:
        return ProviderUnavailable(
            f"{where}server error (HTTP {status}): {message}", status=status, retry_after=retry_after
        )
    low = message.lower()
    if status in (400, 413, 422) and any(h in low for h in _CONTEXT_HINTS):
        return ContextWindowError(f"{where}prompt too large for the model's context window: {message}", status=status)
    return ProviderError(f"{where}request rejected (HTTP {status}): {message}", status=status)
