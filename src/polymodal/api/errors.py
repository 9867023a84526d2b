"""Every error leaves as ``{"error": {"type", "message", "code"}}`` with the right status."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from polymodal.api.responses import JSONResponse
from polymodal.domain.errors import PolymodalError

_STATUS_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "unauthenticated"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


def error_body(type_: str, message: str, code: str, *, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message, "code": code}
    if param is not None:
        error["param"] = param
    return {"error": error}


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


async def _polymodal_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PolymodalError)
    extra = getattr(exc, "headers", None)  # e.g. x-ratelimit-* on our own 429s
    headers = dict(extra) if isinstance(extra, dict) else {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    param = getattr(exc, "param", None)
    return JSONResponse(
        error_body(
            exc.type, exc.message, exc.code, param=param if isinstance(param, str) else None
        ),
        status_code=exc.status,
        headers=headers,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_, code = _STATUS_TYPES.get(exc.status_code, ("invalid_request_error", "http_error"))
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"No route {request.method} {request.url.path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    return JSONResponse(
        error_body(type_, message, code),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
    first: dict[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid", "type": ""}
    if first.get("type") == "json_invalid":
        return JSONResponse(
            error_body(
                "invalid_request_error",
                f"Malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}.",
                "invalid_json",
            ),
            status_code=400,
        )
    where = _loc(first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    body = error_body("invalid_request_error", message, "validation_error", param=where or None)
    body["error"]["details"] = [
        {"loc": _loc(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return JSONResponse(body, status_code=422)


def internal_error_body(request_id: str) -> dict[str, Any]:
    return error_body(
        "server_error", f"Internal server error (request id {request_id}).", "internal_error"
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """The 500 of an unexpected error (the request-context layer logs it)."""
    rid = str(request.scope.get("state", {}).get("request_id", ""))
    return JSONResponse(internal_error_body(rid), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unhandled)
    app.add_exception_handler(PolymodalError, _polymodal_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
