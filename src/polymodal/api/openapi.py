"""What the OpenAPI document says about errors and credentials, so it matches what the
API does (schemathesis checks every response against it in tests/security).

FastAPI documents only ``200`` and a ``422`` shaped ``{"detail": [...]}``; polymodal
answers every error as ``{"error": {"type", "message", "code"}}`` (api/errors.py) and
needs a bearer credential everywhere except the public paths below. `document` rewrites
the generated document once, when it is first built.
"""

from __future__ import annotations

from typing import Any

ERROR_REF = "#/components/schemas/ErrorResponse"
BEARER = "bearer"

# Reachable without credentials. Everything else answers 401 to an anonymous caller.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/.well-known/jwks.json",
        # The credential travels in the body: a password, client secret or refresh
        # token (RFC 6749), the token to revoke (RFC 7009), an invitation token.
        "/v1/auth/token",
        "/v1/auth/revoke",
        "/v1/auth/invitations/accept",
    }
)

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "code"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": "string"},
            },
        }
    },
}

# Statuses any operation may answer with, and why.
_COMMON = {
    "400": "Malformed request (e.g. a body that is not JSON).",
    "401": "Missing, malformed, unknown, expired or revoked credential.",
    "413": "Request body larger than `max_body_bytes`.",
    "415": "Unsupported content type.",
    "422": "A parameter or body field is invalid; `error.param` names it.",
    "429": "Rate limit or budget exceeded; `Retry-After` says when to retry.",
}
_OBJECTS = {
    "403": "The credential's role or scopes do not allow this.",
    "404": "No such object in the caller's tenant.",
    "409": "Conflicts with the current state (e.g. the object already exists).",
    "412": "`If-Match` names a version that is no longer the latest.",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
    }


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _streams(operation: dict[str, Any], schemas: dict[str, Any]) -> bool:
    """An operation whose JSON body has ``stream: bool`` answers Server-Sent Events
    when it is true."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = body.get("schema", {}).get("$ref", "")
    model = schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else {}
    return "stream" in model.get("properties", {})


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error shape, the bearer scheme and each operation's error statuses."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorResponse"] = ERROR_SCHEMA
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`pm_<prefix>_<secret>`) or an access token.",
    }
    for path, operations in schema.get("paths", {}).items():
        public = path in PUBLIC_PATHS
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            # Public operations answer these too (an unknown invitation is a 404).
            for status, description in {**_COMMON, **_OBJECTS}.items():
                current = responses.get(status)
                if current is None or _is_fastapi_validation(current):
                    responses[status] = _error(description)
            if not public:
                operation.setdefault("security", [{BEARER: []}])
            if _streams(operation, components.get("schemas", {})):
                ok = responses.get("200", {}).setdefault("content", {})
                ok.setdefault("text/event-stream", {"schema": {}})  # events of chunks
    _drop_unused(components.get("schemas", {}), schema)
    return schema


def _drop_unused(schemas: dict[str, Any], schema: dict[str, Any]) -> None:
    """FastAPI's validation-error models are referenced by nothing once replaced."""
    text = repr(schema.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and f"/{name}'" not in text:
            nested = repr({k: v for k, v in schemas.items() if k != name})
            if f"/{name}'" not in nested:
                del schemas[name]
