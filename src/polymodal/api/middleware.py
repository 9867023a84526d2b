"""One pure-ASGI middleware for what every request needs: a request id, the body-size
limit, metrics, an access log line, and a JSON 500 (no stack trace) for anything
unhandled. Pure ASGI rather than `BaseHTTPMiddleware`: it adds microseconds, not
milliseconds, and it does not buffer streaming responses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polymodal.api.errors import error_body, internal_error_body
from polymodal.domain import ids
from polymodal.observability.metrics import HttpMetrics

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_UNMATCHED = "<unmatched>"


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else _UNMATCHED


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        max_body_bytes: int,
        access_log: bool,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.access_log = access_log
        self.log = structlog.get_logger("polymodal.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = b""
        length: int | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
                request_id = value
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        if not request_id:
            request_id = ids.hex_id().encode()
        rid = request_id.decode()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)

        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        try:
            # A declared length is checked here (the server reads no more than it says); a
            # body without one (chunked) is read up to the limit first.
            body = receive if length is not None else await self._buffered(receive)
            if body is None or (length is not None and length > self.max_body):
                size = f"of {length} bytes " if length is not None else ""
                await self._send_json(
                    send_with_id,
                    413,
                    error_body(
                        "invalid_request_error",
                        f"Request body {size}exceeds the limit of {self.max_body} bytes.",
                        "payload_too_large",
                    ),
                )
            else:
                await self.app(scope, body, send_with_id)
        except Exception:
            self.log.exception("unhandled error", route=_route_template(scope))
            if not started:
                await self._send_json(send_with_id, 500, internal_error_body(rid))
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            self.metrics.observe(route, scope["method"], status, elapsed)
            if self.access_log:
                self.log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    status=status,
                    ms=round(elapsed * 1000, 2),
                    tenant_id=state.get("tenant_id"),
                )

    async def _buffered(self, receive: Receive) -> Receive | None:
        """The whole body of a request without a content-length, read up to the limit
        (None past it) and handed to the app as one message."""
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                first: Message | None = message
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(parts), "more_body": False}
                break

        async def replay() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()  # disconnects, for streaming responses

        return replay

    @staticmethod
    async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class HotRoutes:
    """The OpenAI-compatible endpoints without the framework's per-request machinery.

    FastAPI reaches an endpoint through route matching over every route, an exception
    middleware, an exit stack and its request handler; for `/v1/chat/completions` that
    is a fifth of the gateway's CPU per request (measured with py-spy under load). These
    endpoints take a bare ``Request`` and parse their own bodies, so this layer calls
    them directly for an exact method and path and renders their errors with the app's
    own exception handlers. Their FastAPI routes stay registered: the OpenAPI document,
    the route table and every other path are unchanged.
    """

    def __init__(self, app: ASGIApp, *, routes: Iterable[Any], handlers: Any) -> None:
        """``routes``: the hot routes (each a POST route whose endpoint takes only a
        ``Request``); ``handlers``: the app, whose exception handlers render errors."""
        self.app = app
        self._hot = {route.path: route for route in routes}
        self._handlers = handlers

    def _handler_for(self, exc: Exception) -> Any:
        handlers = self._handlers.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:  # unexpected: the request-context layer logs it and answers
                return None
            if cls in handlers:
                return handlers[cls]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._hot.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
