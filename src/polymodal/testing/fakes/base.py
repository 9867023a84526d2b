"""The request flow every wire shares: record, authenticate, apply faults."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polymodal.testing.fakes.core import FakeState, Faults, Wire
from polymodal.testing.fakes.responses import Frame, HangResponse

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass(slots=True)
class Call:
    """A provider API request that passed auth and the pre-response faults."""

    body: dict[str, Any]
    faults: Faults | None
    request_id: str


class WireApp:
    """One provider's HTTP surface; subclasses implement the wire format."""

    wire: ClassVar[Wire]
    default_models: ClassVar[tuple[str, ...]]
    retry_after_by_default: ClassVar[bool] = True

    def __init__(self, state: FakeState) -> None:
        self.state = state

    # to implement ----------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def auth_error(self, request: Request) -> Response | None:
        """The provider's response to a missing or wrong credential, else None."""
        raise NotImplementedError

    def error(
        self,
        status: int,
        message: str | None = None,
        err_type: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        retry_after: str | None = None,
    ) -> Response:
        """The provider's error response for ``status``."""
        raise NotImplementedError

    def stream_error_frame(self, faults: Faults) -> Frame:
        """The provider's in-stream error event."""
        raise NotImplementedError

    def invalid_json(self) -> Response:
        return self.error(400)

    def not_found(self, request: Request) -> Response:
        return self.error(404)

    def response_headers(self, request_id: str) -> dict[str, str]:
        return {}

    # shared ----------------------------------------------------------------

    def catch_all(self) -> Route:
        async def _not_found(request: Request) -> Response:
            return self.not_found(request)

        return Route("/{path:path}", _not_found, methods=ALL_METHODS)

    def fault_error(self, faults: Faults, request_id: str) -> Response:
        status = faults.status or 500
        retry_after = None
        if faults.retry_after is not None or (status == 429 and self.retry_after_by_default):
            seconds = faults.retry_after if faults.retry_after is not None else 1
            retry_after = str(int(seconds)) if float(seconds).is_integer() else str(float(seconds))
        return self.error(
            status,
            faults.error_message,
            faults.error_type,
            request_id=request_id,
            retry_after=retry_after,
        )

    async def begin(
        self, request: Request, *, model: str | None = None, needs_json: bool = True
    ) -> Call | Response:
        """Record the request, check auth, apply latency/hang/status faults."""
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
        state = self.state
        state.record(request, body)
        denied = self.auth_error(request)
        if denied is not None:
            return denied
        if model is None and isinstance(body, dict):
            m = body.get("model")
            model = m if isinstance(m, str) else None
        request_id = state.new_id(32)
        faults = state.take_faults(request.scope["path"], model)
        if faults is not None:
            if faults.latency_ms:
                await asyncio.sleep(faults.latency_ms / 1000)
            if faults.hang:
                return HangResponse(state.closing)
            if faults.status is not None:
                return self.fault_error(faults, request_id)
        if needs_json and not isinstance(body, dict):
            return self.invalid_json()
        return Call(body if isinstance(body, dict) else {}, faults, request_id)


def bearer_token(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def int_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def sse(event: str | None, payload: Any, *, crlf: bool = False) -> Frame:
    """One SSE frame: ``[event: X\\n]data: <json>\\n\\n`` (``\\r\\n`` for Gemini)."""
    nl = b"\r\n" if crlf else b"\n"
    head = b"data: " if event is None else b"event: " + event.encode() + nl + b"data: "
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return (head, data, nl + nl)
