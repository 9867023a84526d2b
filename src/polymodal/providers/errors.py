"""Map HTTP outcomes onto the domain's error classes, once, at the adapter edge."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from polymodal.domain.errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ProviderError,
    RateLimited,
    Timeout,
    Unavailable,
)
from polymodal.providers.http import UpstreamError


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI), ``Retry-After`` seconds, or an HTTP date."""
    if ms := headers.get("retry-after-ms"):
        try:
            millis = float(ms)
        except ValueError:
            millis = math.nan
        if math.isfinite(millis):
            return max(millis / 1000, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):  # neither seconds nor a date: ignore it
            return None
        return max(parsed.timestamp() - time.time(), 0.0)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def from_status(
    status: int,
    message: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    context_too_long: bool = False,
    content_filtered: bool = False,
) -> ProviderError:
    """The error class for an upstream HTTP status (DESIGN.md section 10)."""
    text = f"{provider} returned {status}: {message}"[:500]
    if context_too_long:
        return ContextTooLong(text, provider=provider, upstream_status=status)
    if content_filtered:
        return ContentFiltered(text, provider=provider, upstream_status=status)
    if status == 429:
        return RateLimited(text, retry_after=retry_after_seconds(headers or {}), provider=provider)
    if status == 408:
        return Timeout(text, provider=provider, upstream_status=status)
    if status >= 500:
        return Unavailable(text, provider=provider, upstream_status=status)
    if status in (401, 403):
        return AuthFailed(text, provider=provider, upstream_status=status)
    return BadRequest(text, provider=provider, upstream_status=status)


def from_transport(error: UpstreamError, *, provider: str) -> ProviderError:
    """Connection-level failures: timeouts are `Timeout`, a connection dropped mid-body is
    a truncation, everything else `Unavailable`."""
    if error.kind == "timeout":
        return Timeout(f"{provider}: {error}", provider=provider)
    if error.kind == "disconnected":
        return truncated(provider)
    return Unavailable(f"{provider}: {error}", provider=provider)


def malformed(provider: str, what: str) -> Unavailable:
    """A 200 whose body or chunk does not parse: treated as the provider being down."""
    return Unavailable(f"{provider} sent a malformed {what}", provider=provider, code="malformed")


def truncated(provider: str) -> Unavailable:
    return Unavailable(
        f"{provider} ended the stream before its terminator", provider=provider, code="truncated"
    )
