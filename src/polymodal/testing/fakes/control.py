"""``/_fake/*``: run-time control of a fake server (no auth)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polymodal.testing.fakes.core import FakeState, Faults, Reply
from polymodal.testing.fakes.responses import json_response


def control_routes(state: FakeState) -> list[BaseRoute]:
    """``/_fake/*``: run-time control of the fake (no auth)."""

    def _faults_body() -> dict[str, Any]:
        return {"faults": state.faults.to_dict(), "remaining": state.faults_remaining}

    async def _json(request: Request) -> Any:
        raw = await request.body()
        return orjson.loads(raw) if raw.strip() else {}

    def _bad(message: str) -> Response:
        return json_response({"error": message}, status=400)

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = await _json(request)
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object of faults")
                state.set_faults(Faults.from_dict(data))
            except (ValueError, TypeError) as exc:
                return _bad(str(exc))
        elif request.method == "DELETE":
            state.set_faults(Faults())
        return json_response(_faults_body())

    async def replies(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = await _json(request)
                if not isinstance(data, dict):
                    raise ValueError("expected {'replies': [...], 'default': {...}}")
                new = [Reply.from_obj(r) for r in data.get("replies") or ()]
                if "default" in data:
                    d = data["default"]
                    state.default_reply = None if d is None else Reply.from_obj(d)
            except (ValueError, TypeError) as exc:
                return _bad(str(exc))
            state.push_replies(new)
        elif request.method == "DELETE":
            state.clear_replies()
            state.default_reply = None
        default = state.default_reply
        return json_response(
            {
                "pending": [r.to_dict() for r in state.pending_replies()],
                "default": default.to_dict() if default is not None else None,
            }
        )

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            state.clear_recorded()
        return json_response({"requests": state.recorded()})

    async def reset(request: Request) -> Response:
        state.reset()
        return json_response({"ok": True})

    async def health(request: Request) -> Response:
        return json_response({"ok": True, "wire": state.wire})

    return [
        Route("/_fake/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_fake/replies", replies, methods=["GET", "POST", "DELETE"]),
        Route("/_fake/requests", requests, methods=["GET", "DELETE"]),
        Route("/_fake/reset", reset, methods=["POST"]),
        Route("/_fake/health", health, methods=["GET"]),
    ]
