"""OpenAI wire: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

Auth: ``Authorization: Bearer <key>``. Errors: ``{"error": {"message", "type",
"param", "code"}}``. Streams: ``data: <chunk>\\n\\n`` lines ending with
``data: [DONE]``; with ``stream_options.include_usage`` every chunk carries
``"usage": null`` and a last chunk with ``"choices": []`` carries the usage.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polymodal.testing.fakes.base import WireApp, bearer_token, int_or_none, sse
from polymodal.testing.fakes.core import (
    Completion,
    Faults,
    count_words,
    dumps,
    embed_base64,
    embed_vector,
    tool_arguments_json,
)
from polymodal.testing.fakes.responses import Frame, StreamResponse, json_response

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ("invalid_request_error", None, "The requested resource was not found."),
    409: ("invalid_request_error", None, "The request conflicted with another request."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 1, Used 1, Requested 1. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
    504: ("server_error", None, "Gateway timeout."),
}

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "safety": "content_filter",
    "blocked": "content_filter",
}
_ARG_PIECE = re.compile(r".{1,8}", re.DOTALL)
_FINGERPRINT = "fp_fake0000"
_DEFAULT = "<status default>"


def _mask(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def _usage(c: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class OpenAIApp(WireApp):
    wire = "openai"
    default_models = (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
    )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
        ]

    # wire basics -------------------------------------------------------------

    def response_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": "req_" + request_id, "openai-processing-ms": "1"}

    def error(
        self,
        status: int,
        message: str | None = None,
        err_type: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        retry_after: str | None = None,
        param: str | None = None,
        code: str | None = _DEFAULT,
    ) -> Response:
        default = _ERRORS.get(
            status,
            ("server_error", None, "Server error.")
            if status >= 500
            else ("invalid_request_error", None, "Invalid request."),
        )
        body = {
            "error": {
                "message": message if message is not None else default[2],
                "type": err_type if err_type is not None else default[0],
                "param": param,
                "code": default[1] if code == _DEFAULT else code,
            }
        }
        hdrs = dict(headers or {})
        if request_id is not None:
            hdrs.update(self.response_headers(request_id))
        if retry_after is not None:
            hdrs["retry-after"] = retry_after
        return json_response(body, status=status, headers=hdrs)

    def auth_error(self, request: Request) -> Response | None:
        key = self.state.api_key
        if key is None:
            return None
        token = bearer_token(request)
        if not token:
            return self.error(401, _NO_KEY, "invalid_request_error", code=None)
        if token != key:
            return self.error(
                401,
                f"Incorrect API key provided: {_mask(token)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        return None

    def invalid_json(self) -> Response:
        return self.error(400, _BAD_JSON, "invalid_request_error", code=None)

    def not_found(self, request: Request) -> Response:
        return self.error(
            404, f"Invalid URL ({request.method} {request.url.path})", "invalid_request_error"
        )

    def stream_error_frame(self, faults: Faults) -> Frame:
        return sse(
            None,
            {
                "error": {
                    "message": faults.error_message or _ERRORS[500][2],
                    "type": faults.error_type or "server_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    def _missing(self, param: str) -> Response:
        return self.error(
            400,
            f"Missing required parameter: '{param}'.",
            "invalid_request_error",
            param=param,
            code="missing_required_parameter",
        )

    # chat ----------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        call = await self.begin(request)
        if isinstance(call, Response):
            return call
        body = call.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter", "invalid_request_error")
        messages = body.get("messages")
        if messages is None:
            return self._missing("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                "invalid_request_error",
                param="messages",
                code="empty_array",
            )
        prompt_tokens = 0
        last_user = ""
        for m in messages:
            if not isinstance(m, dict):
                continue
            text = _text_of(m.get("content"))
            prompt_tokens += count_words(text)
            if m.get("role") == "user":
                last_user = text
        max_tokens = int_or_none(body.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = int_or_none(body.get("max_tokens"))
        comp = self.state.complete(
            prompt_tokens=prompt_tokens,
            last_user_text=last_user,
            has_tools=bool(body.get("tools") or body.get("functions")),
            max_tokens=max_tokens,
        )
        cid = "chatcmpl-fake" + self.state.new_id(20)
        created = int(time.time())
        headers = self.response_headers(call.request_id)
        calls = [
            ("call_" + (c.id or self.state.new_id(24)), c.name, tool_arguments_json(c))
            for c in comp.tool_calls
        ]
        if body.get("stream") is True:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
            frames = self._chunks(cid, created, model, comp, calls, include_usage)
            return StreamResponse(
                frames,
                media_type="text/event-stream; charset=utf-8",
                headers=headers,
                faults=call.faults,
                error_frame=self.stream_error_frame(call.faults or Faults()),
                closing=self.state.closing,
            )
        message: dict[str, Any] = {
            "role": "assistant",
            "content": comp.text if comp.pieces or not calls else None,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in calls
            ]
        return json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _FINISH[comp.finish],
                    }
                ],
                "usage": _usage(comp),
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            },
            headers=headers,
            faults=call.faults,
        )

    def _chunks(
        self,
        cid: str,
        created: int,
        model: str,
        comp: Completion,
        calls: list[tuple[str, str, str]],
        include_usage: bool,
    ) -> list[Frame]:
        # Everything but "choices" is identical in every chunk: serialize it once.
        common: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        if include_usage:
            common["usage"] = None
        prefix = dumps(common)[:-1] + b',"choices":'

        def chunk(delta: dict[str, Any], finish: str | None = None) -> Frame:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse(None, prefix + dumps([choice]) + b"}")

        frames: list[Frame] = []
        role: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if not comp.pieces and calls:
            role["content"] = None
        else:
            frames.append(chunk(role))
        for piece in comp.pieces:
            frames.append(chunk({"content": piece}))
        for index, (call_id, name, args) in enumerate(calls):
            start = {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
            frames.append(chunk({**role, **start} if not frames else start))
            for part in _ARG_PIECE.findall(args):
                frames.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                )
        frames.append(chunk({}, _FINISH[comp.finish]))
        if include_usage:
            usage = {**common, "choices": [], "usage": _usage(comp)}
            frames.append(sse(None, usage))
        frames.append(sse(None, b"[DONE]"))
        return frames

    # embeddings ------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        call = await self.begin(request)
        if isinstance(call, Response):
            return call
        body = call.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter", "invalid_request_error")
        inp = body.get("input")
        if inp is None:
            return self._missing("input")
        items = _embedding_inputs(inp)
        if items is None:
            return self.error(
                400,
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.",
                "invalid_request_error",
            )
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            return self.error(
                400,
                f"Invalid value for 'encoding_format': '{fmt}'. "
                "Supported values are: 'float' and 'base64'.",
                "invalid_request_error",
                param="encoding_format",
                code="invalid_value",
            )
        dims = body.get("dimensions")
        if dims is not None:
            if model == "text-embedding-ada-002":
                return self.error(
                    400,
                    "This model does not support specifying dimensions.",
                    "invalid_request_error",
                )
            if int_or_none(dims) is None or dims < 1:
                return self.error(
                    400,
                    f"Invalid value for 'dimensions' = {dims}. Must be greater than 0.",
                    "invalid_request_error",
                    param="dimensions",
                )
        dim = self.state.embed_dim(model, dims)
        data = []
        tokens = 0
        for index, (key, n) in enumerate(items):
            tokens += n
            vec = embed_vector(key, dim)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": embed_base64(vec) if fmt == "base64" else vec,
                }
            )
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers=self.response_headers(call.request_id),
            faults=call.faults,
        )

    # models ------------------------------------------------------------------------

    def _model(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1715367049, "owned_by": "system"}

    async def list_models(self, request: Request) -> Response:
        call = await self.begin(request, needs_json=False)
        if isinstance(call, Response):
            return call
        return json_response(
            {"object": "list", "data": [self._model(m) for m in self.state.models]},
            headers=self.response_headers(call.request_id),
            faults=call.faults,
        )

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model"]
        call = await self.begin(request, model=model_id, needs_json=False)
        if isinstance(call, Response):
            return call
        if model_id not in self.state.models:
            return self.error(
                404,
                f"The model '{model_id}' does not exist",
                "invalid_request_error",
                param="model",
                code="model_not_found",
                request_id=call.request_id,
            )
        return json_response(
            self._model(model_id),
            headers=self.response_headers(call.request_id),
            faults=call.faults,
        )


def _embedding_inputs(inp: Any) -> list[tuple[str, int]] | None:
    """(hash key, token count) per input; None when the input is invalid."""

    def one(x: Any) -> tuple[str, int] | None:
        if isinstance(x, str):
            return (x, count_words(x)) if x else None
        if isinstance(x, list) and x and all(isinstance(t, int) for t in x):
            return (dumps(x).decode(), len(x))
        return None

    if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)):
        single = one(inp)
        return [single] if single is not None else None
    if not isinstance(inp, list) or not inp:
        return None
    out = [one(x) for x in inp]
    return None if any(x is None for x in out) else [x for x in out if x is not None]
