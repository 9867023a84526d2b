"""One error hierarchy for the whole product.

API errors carry the HTTP status, the OpenAI-style ``type`` and a stable ``code``; the API
layer renders them as ``{"error": {"type", "message", "code"}}``. Provider errors are what
adapters raise at their boundary (``raise ... from e``); failover keys off the class,
never off the message text.
"""

from __future__ import annotations


class PolymodalError(Exception):
    """Base of every error polymodal raises on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(PolymodalError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ValidationFailed(InvalidRequest):
    """Well-formed input that breaks a rule (422). ``param`` names the offending field,
    e.g. ``inputs.facts``; the message already starts with it."""

    status = 422
    code = "validation_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class Unauthenticated(PolymodalError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(PolymodalError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(PolymodalError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(PolymodalError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PreconditionFailed(PolymodalError):
    """An ``If-Match`` precondition names a version that is no longer the latest."""

    status = 412
    type = "invalid_request_error"
    code = "precondition_failed"


class ServiceUnavailable(PolymodalError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class RateLimitExceeded(PolymodalError):
    """A tenant's or key's own rate limit (not an upstream's). ``headers`` are the
    ``x-ratelimit-*`` values OpenAI sends, so clients back off the same way."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.headers = headers or {}


class BudgetExceeded(PolymodalError):
    """A hard monthly budget would be exceeded by this call's estimated cost."""

    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


# --- upstream model providers (DESIGN.md section 10) -------------------------------


class ProviderError(PolymodalError):
    """An upstream model call failed. Subclasses say whether failover may help."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        upstream_status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.provider = provider
        self.upstream_status = upstream_status


class RateLimited(ProviderError):
    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider: str = "",
        upstream_status: int | None = 429,
    ) -> None:
        super().__init__(message, provider=provider, upstream_status=upstream_status)
        self.retry_after = retry_after


class Unavailable(ProviderError):
    status = 503
    code = "upstream_unavailable"


class Timeout(ProviderError):
    status = 504
    code = "upstream_timeout"


class BadRequest(ProviderError):
    status = 400
    type = "invalid_request_error"
    code = "upstream_bad_request"
    retryable = False


class AuthFailed(ProviderError):
    status = 502
    code = "upstream_auth_failed"
    retryable = False


class ContentFiltered(ProviderError):
    status = 400
    type = "invalid_request_error"
    code = "content_filtered"
    retryable = False


class InvalidModelOutput(ProviderError):
    """The model answered, but not in the required shape (e.g. JSON that breaks the
    template's schema) even after a repair attempt."""

    status = 502
    code = "invalid_model_output"
    retryable = False


class ContextTooLong(ProviderError):
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"
    retryable = False
