"""Anthropic wire: ``POST /v1/messages`` (+ ``/count_tokens``), ``GET /v1/models``.

Auth: ``x-api-key`` plus a required ``anthropic-version`` header. Errors:
``{"type": "error", "error": {"type", "message"}, "request_id"}`` (529 is
``overloaded_error``). Streams: named SSE events ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta`` /
``input_json_delta``), ``content_block_stop``, ``message_delta``,
``message_stop``; in-stream failures are ``event: error``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polymodal.testing.fakes.base import WireApp, int_or_none, sse
from polymodal.testing.fakes.core import (
    Completion,
    Faults,
    ToolCall,
    count_words,
    tool_arguments_json,
)
from polymodal.testing.fakes.responses import Frame, StreamResponse, json_response

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: (
        "billing_error",
        "Your credit balance is too low to access the Anthropic API. "
        "Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit "
        "(https://docs.anthropic.com/en/api/rate-limits); see the response headers for "
        "current usage. Please reduce the prompt length or the maximum tokens requested, "
        "or try again later. You may also contact sales at "
        "https://www.anthropic.com/contact-sales to discuss your options for a rate limit "
        "increase.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "safety": "refusal",
    "blocked": "refusal",
}
_JSON_PIECE = re.compile(r".{1,10}", re.DOTALL)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_result":
            texts.append(_text_of(block.get("content")))
    return " ".join(t for t in texts if t)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


class AnthropicApp(WireApp):
    wire = "anthropic"
    default_models = (
        "claude-sonnet-4-5-20250929",
        "claude-opus-4-1-20250805",
        "claude-3-5-haiku-20241022",
    )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
        ]

    # wire basics ---------------------------------------------------------------

    def response_headers(self, request_id: str) -> dict[str, str]:
        return {"request-id": "req_" + request_id}

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
        default = _ERRORS.get(
            status,
            ("api_error", "Internal server error")
            if status >= 500
            else ("invalid_request_error", "Invalid request."),
        )
        rid = "req_" + (request_id or self.state.new_id(32))
        body = {
            "type": "error",
            "error": {
                "type": err_type if err_type is not None else default[0],
                "message": message if message is not None else default[1],
            },
            "request_id": rid,
        }
        hdrs = dict(headers or {})
        hdrs["request-id"] = rid
        if retry_after is not None:
            hdrs["retry-after"] = retry_after
        return json_response(body, status=status, headers=hdrs)

    def auth_error(self, request: Request) -> Response | None:
        key = self.state.api_key
        if key is not None:
            given = request.headers.get("x-api-key")
            if not given:
                return self.error(401, "x-api-key header is required", "authentication_error")
            if given != key:
                return self.error(401, "invalid x-api-key", "authentication_error")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        return None

    def invalid_json(self) -> Response:
        return self.error(400, "There was an issue with the request body: invalid JSON")

    def not_found(self, request: Request) -> Response:
        return self.error(404, "Not Found")

    def stream_error_frame(self, faults: Faults) -> Frame:
        return sse(
            "error",
            {
                "type": "error",
                "error": {
                    "type": faults.error_type or "overloaded_error",
                    "message": faults.error_message or "Overloaded",
                },
            },
        )

    # messages ----------------------------------------------------------------

    def _parse(self, body: dict[str, Any], *, for_count: bool) -> tuple[int, str] | Response:
        for name in ("model", "messages") if for_count else ("model", "max_tokens", "messages"):
            if name not in body:
                return self.error(400, f"{name}: Field required")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return self.error(400, "messages: at least one message is required")
        if not for_count and int_or_none(body["max_tokens"]) is None:
            return self.error(400, "max_tokens: Input should be a valid integer")
        prompt_tokens = count_words(_text_of(body.get("system")))
        last_user = ""
        for m in messages:
            if not isinstance(m, dict):
                return self.error(400, "messages.0: Input should be a valid dictionary")
            text = _text_of(m.get("content"))
            prompt_tokens += count_words(text)
            if m.get("role") == "user":
                last_user = text
        return prompt_tokens, last_user

    async def count_tokens(self, request: Request) -> Response:
        call = await self.begin(request)
        if isinstance(call, Response):
            return call
        parsed = self._parse(call.body, for_count=True)
        if isinstance(parsed, Response):
            return parsed
        return json_response(
            {"input_tokens": parsed[0]},
            headers=self.response_headers(call.request_id),
            faults=call.faults,
        )

    async def messages(self, request: Request) -> Response:
        call = await self.begin(request)
        if isinstance(call, Response):
            return call
        body = call.body
        parsed = self._parse(body, for_count=False)
        if isinstance(parsed, Response):
            return parsed
        prompt_tokens, last_user = parsed
        comp = self.state.complete(
            prompt_tokens=prompt_tokens,
            last_user_text=last_user,
            has_tools=bool(body.get("tools")),
            max_tokens=body["max_tokens"],
        )
        model = str(body["model"])
        msg_id = "msg_01fake" + self.state.new_id(16)
        calls = [("toolu_01fake" + (c.id or self.state.new_id(16)), c) for c in comp.tool_calls]
        headers = self.response_headers(call.request_id)
        if body.get("stream") is True:
            return StreamResponse(
                self._events(msg_id, model, comp, calls),
                media_type="text/event-stream; charset=utf-8",
                headers=headers,
                faults=call.faults,
                error_frame=self.stream_error_frame(call.faults or Faults()),
                closing=self.state.closing,
            )
        content: list[dict[str, Any]] = []
        if comp.pieces or not calls:
            content.append({"type": "text", "text": comp.text})
        for tool_id, c in calls:
            content.append(
                {"type": "tool_use", "id": tool_id, "name": c.name, "input": dict(c.arguments)}
            )
        return json_response(
            {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": _STOP[comp.finish],
                "stop_sequence": None,
                "usage": _usage(comp.prompt_tokens, comp.completion_tokens),
            },
            headers=headers,
            faults=call.faults,
        )

    def _events(
        self, msg_id: str, model: str, comp: Completion, calls: list[tuple[str, ToolCall]]
    ) -> list[Frame]:
        frames: list[Frame] = [
            sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": _usage(comp.prompt_tokens, 1),
                    },
                },
            )
        ]

        def start(index: int, block: dict[str, Any]) -> None:
            frames.append(
                sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": block},
                )
            )
            if index == 0:
                frames.append(sse("ping", {"type": "ping"}))

        def delta(index: int, d: dict[str, Any]) -> None:
            frames.append(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": d},
                )
            )

        def stop(index: int) -> None:
            frames.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))

        index = 0
        if comp.pieces or not calls:
            start(0, {"type": "text", "text": ""})
            for piece in comp.pieces:
                delta(0, {"type": "text_delta", "text": piece})
            stop(0)
            index = 1
        for tool_id, c in calls:
            start(index, {"type": "tool_use", "id": tool_id, "name": c.name, "input": {}})
            delta(index, {"type": "input_json_delta", "partial_json": ""})
            for part in _JSON_PIECE.findall(tool_arguments_json(c)):
                delta(index, {"type": "input_json_delta", "partial_json": part})
            stop(index)
            index += 1
        frames.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _STOP[comp.finish], "stop_sequence": None},
                    "usage": {"output_tokens": comp.completion_tokens},
                },
            )
        )
        frames.append(sse("message_stop", {"type": "message_stop"}))
        return frames

    # models ------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        call = await self.begin(request, needs_json=False)
        if isinstance(call, Response):
            return call
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for m in self.state.models
        ]
        return json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
            headers=self.response_headers(call.request_id),
            faults=call.faults,
        )
