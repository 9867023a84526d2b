"""Google Gemini wire (Generative Language API, ``v1beta`` and ``v1``).

``POST /{v}/models/{model}:generateContent`` and ``:streamGenerateContent``
(``?alt=sse``: ``data: <GenerateContentResponse>\\r\\n\\r\\n`` events, no
terminator event; without ``alt=sse``: one JSON array of responses),
``:embedContent``, ``:batchEmbedContents``, ``:countTokens``;
``GET /{v}/models``. Auth: ``x-goog-api-key`` header or ``key`` query
parameter; a wrong key is a 400 ``API_KEY_INVALID``, a missing one a 403
``PERMISSION_DENIED`` (as the real API does). Errors:
``{"error": {"code", "message", "status", ["details"]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polymodal.testing.fakes.base import WireApp, int_or_none, sse
from polymodal.testing.fakes.core import Completion, Faults, count_words, dumps, embed_vector
from polymodal.testing.fakes.responses import Frame, StreamResponse, json_response

_JSON = "application/json; charset=UTF-8"
_VERSIONS = frozenset({"v1beta", "v1", "v1alpha"})
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    501: ("UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
_FINISH = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "safety": "SAFETY",
    "blocked": "SAFETY",
}
_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_BAD_KEY = "API key not valid. Please pass a valid API key."


def _safety_ratings(blocked: bool) -> list[dict[str, Any]]:
    ratings: list[dict[str, Any]] = [
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
    ]
    if blocked:
        ratings[3] = {
            "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
            "probability": "HIGH",
            "blocked": True,
        }
    return ratings


def _parts_text(content: Any) -> str:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return ""
    return " ".join(
        p["text"]
        for p in content["parts"]
        if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def _usage(prompt: int, candidates: int) -> dict[str, Any]:
    # proto3 JSON omits zero-valued fields: no candidatesTokenCount when nothing was generated.
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + candidates
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


class GeminiApp(WireApp):
    wire = "gemini"
    default_models = (
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-2.0-flash",
        "text-embedding-004",
        "gemini-embedding-001",
    )
    retry_after_by_default = False

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/{version}/models", self.list_models, methods=["GET"]),
            Route("/{version}/models/{name:path}", self.dispatch, methods=["GET", "POST"]),
        ]

    # wire basics ---------------------------------------------------------------

    def error(
        self,
        status: int,
        message: str | None = None,
        err_type: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        retry_after: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> Response:
        default = _ERRORS.get(
            status, ("INTERNAL", _ERRORS[500][1]) if status >= 500 else _ERRORS[400]
        )
        err: dict[str, Any] = {
            "code": status,
            "message": message if message is not None else default[1],
            "status": err_type if err_type is not None else default[0],
        }
        if status == 429:
            details = [
                *(details or []),
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after or '1'}s",
                },
            ]
        if details:
            err["details"] = details
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["retry-after"] = retry_after
        return json_response({"error": err}, status=status, headers=hdrs, media_type=_JSON)

    def auth_error(self, request: Request) -> Response | None:
        key = self.state.api_key
        if key is None:
            return None
        given = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not given:
            return self.error(403, _NO_KEY, "PERMISSION_DENIED")
        if given != key:
            return self.error(
                400,
                _BAD_KEY,
                "INVALID_ARGUMENT",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": _BAD_KEY,
                    },
                ],
            )
        return None

    def invalid_json(self) -> Response:
        return self.error(
            400, "Invalid JSON payload received. Unexpected token.\n{\n^", "INVALID_ARGUMENT"
        )

    def not_found(self, request: Request) -> Response:
        return self.error(404, f"Method not found: {request.url.path}", "NOT_FOUND")

    def stream_error_frame(self, faults: Faults) -> Frame:
        err = {
            "error": {
                "code": 503,
                "message": faults.error_message or _ERRORS[503][1],
                "status": faults.error_type or "UNAVAILABLE",
            }
        }
        return sse(None, err, crlf=True)

    # dispatch ----------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        if request.path_params["version"] not in _VERSIONS:
            return self.not_found(request)
        name: str = request.path_params["name"]
        model, _, method = name.partition(":")
        if request.method == "GET":
            if method:
                return self.not_found(request)
            return await self.get_model(request, model)
        handler = {
            "generateContent": self.generate,
            "streamGenerateContent": self.generate,
            "embedContent": self.embed,
            "batchEmbedContents": self.batch_embed,
            "countTokens": self.count_tokens,
        }.get(method)
        if handler is None or not model:
            return self.not_found(request)
        return await handler(request, model, method)

    def _prompt(self, body: dict[str, Any]) -> tuple[int, str] | Response:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self.error(400, "* GenerateContentRequest.contents: contents is not specified\n")
        system = body.get("systemInstruction", body.get("system_instruction"))
        prompt_tokens = count_words(_parts_text(system))
        last_user = ""
        for content in contents:
            text = _parts_text(content)
            prompt_tokens += count_words(text)
            if isinstance(content, dict) and content.get("role", "user") == "user":
                last_user = text
        return prompt_tokens, last_user

    async def count_tokens(self, request: Request, model: str, method: str) -> Response:
        call = await self.begin(request, model=model)
        if isinstance(call, Response):
            return call
        body = call.body.get("generateContentRequest", call.body)
        parsed = self._prompt(body if isinstance(body, dict) else {})
        if isinstance(parsed, Response):
            return parsed
        return json_response({"totalTokens": parsed[0]}, media_type=_JSON, faults=call.faults)

    async def generate(self, request: Request, model: str, method: str) -> Response:
        call = await self.begin(request, model=model)
        if isinstance(call, Response):
            return call
        body = call.body
        parsed = self._prompt(body)
        if isinstance(parsed, Response):
            return parsed
        config = body.get("generationConfig", body.get("generation_config"))
        max_tokens = None
        if isinstance(config, dict):
            max_tokens = int_or_none(config.get("maxOutputTokens", config.get("max_output_tokens")))
        comp = self.state.complete(
            prompt_tokens=parsed[0],
            last_user_text=parsed[1],
            has_tools=bool(body.get("tools")),
            max_tokens=max_tokens,
        )
        response_id = "fake" + self.state.new_id(18)
        if method == "generateContent":
            return json_response(
                self._response(comp, model, response_id), media_type=_JSON, faults=call.faults
            )
        chunks = self._chunks(comp, model, response_id)
        error = self.stream_error_frame(call.faults or Faults())
        if request.query_params.get("alt") == "sse":
            frames = [sse(None, c, crlf=True) for c in chunks]
            media_type = "text/event-stream"
        else:  # one JSON array, streamed element by element
            frames = [(b"[" if i == 0 else b",\r\n", dumps(c), b"") for i, c in enumerate(chunks)]
            frames[-1] = (frames[-1][0], frames[-1][1], b"]")
            error = (b",\r\n", error[1], b"]")
            media_type = _JSON
        return StreamResponse(
            frames,
            media_type=media_type,
            headers={},
            faults=call.faults,
            error_frame=error,
            closing=self.state.closing,
        )

    def _envelope(self, model: str, response_id: str) -> dict[str, Any]:
        return {"modelVersion": model, "responseId": response_id}

    def _response(self, comp: Completion, model: str, response_id: str) -> dict[str, Any]:
        if comp.finish == "blocked":
            return {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _safety_ratings(True)},
                "usageMetadata": _usage(comp.prompt_tokens, 0),
                **self._envelope(model, response_id),
            }
        if comp.finish == "safety":
            candidate: dict[str, Any] = {
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": _safety_ratings(True),
            }
            return {
                "candidates": [candidate],
                "usageMetadata": _usage(comp.prompt_tokens, 0),
                **self._envelope(model, response_id),
            }
        parts: list[dict[str, Any]] = []
        if comp.pieces or not comp.tool_calls:
            parts.append({"text": comp.text})
        parts.extend(
            {"functionCall": {"name": c.name, "args": dict(c.arguments)}} for c in comp.tool_calls
        )
        return {
            "candidates": [
                {
                    "content": {"parts": parts, "role": "model"},
                    "finishReason": _FINISH[comp.finish],
                    "index": 0,
                }
            ],
            "usageMetadata": _usage(comp.prompt_tokens, comp.completion_tokens),
            **self._envelope(model, response_id),
        }

    def _chunks(self, comp: Completion, model: str, response_id: str) -> list[Any]:
        """Stream responses: one per text piece; the last carries finishReason and usage."""
        if comp.finish in ("blocked", "safety"):
            return [self._response(comp, model, response_id)]
        envelope = self._envelope(model, response_id)
        partial = {"promptTokenCount": comp.prompt_tokens, "totalTokenCount": comp.prompt_tokens}
        groups: list[list[dict[str, Any]]] = [[{"text": p}] for p in comp.pieces]
        calls = [
            {"functionCall": {"name": c.name, "args": dict(c.arguments)}} for c in comp.tool_calls
        ]
        if calls:
            groups.append(calls)
        if not groups:
            groups.append([{"text": ""}])
        out: list[Any] = []
        for i, parts in enumerate(groups):
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
            last = i == len(groups) - 1
            if last:
                candidate["finishReason"] = _FINISH[comp.finish]
            candidate["index"] = 0
            usage = _usage(comp.prompt_tokens, comp.completion_tokens) if last else partial
            out.append({"candidates": [candidate], "usageMetadata": usage, **envelope})
        return out

    # embeddings --------------------------------------------------------------

    def _embedding(self, model: str, req: Any, where: str) -> dict[str, Any] | Response:
        if not isinstance(req, dict) or not isinstance(req.get("content"), dict):
            return self.error(400, f"* {where}.content: content is not specified\n")
        text = _parts_text(req["content"])
        dim = self.state.embed_dim(
            model, req.get("outputDimensionality", req.get("output_dimensionality"))
        )
        return {"values": embed_vector(text, dim)}

    async def embed(self, request: Request, model: str, method: str) -> Response:
        call = await self.begin(request, model=model)
        if isinstance(call, Response):
            return call
        emb = self._embedding(model, call.body, "EmbedContentRequest")
        if isinstance(emb, Response):
            return emb
        return json_response({"embedding": emb}, media_type=_JSON, faults=call.faults)

    async def batch_embed(self, request: Request, model: str, method: str) -> Response:
        call = await self.begin(request, model=model)
        if isinstance(call, Response):
            return call
        reqs = call.body.get("requests")
        if not isinstance(reqs, list) or not reqs:
            return self.error(
                400, "* BatchEmbedContentsRequest.requests: requests is not specified\n"
            )
        out: list[dict[str, Any]] = []
        for i, req in enumerate(reqs):
            emb = self._embedding(model, req, f"BatchEmbedContentsRequest.requests[{i}]")
            if isinstance(emb, Response):
                return emb
            out.append(emb)
        return json_response({"embeddings": out}, media_type=_JSON, faults=call.faults)

    # models ------------------------------------------------------------------

    def _model(self, model: str) -> dict[str, Any]:
        embedding = "embedding" in model
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model,
            "description": f"Fake {model}",
            "inputTokenLimit": 2048 if embedding else 1048576,
            "outputTokenLimit": 1 if embedding else 65536,
            "supportedGenerationMethods": ["embedContent", "batchEmbedContents"]
            if embedding
            else ["generateContent", "countTokens"],
        }

    async def list_models(self, request: Request) -> Response:
        if request.path_params["version"] not in _VERSIONS:
            return self.not_found(request)
        call = await self.begin(request, needs_json=False)
        if isinstance(call, Response):
            return call
        return json_response(
            {"models": [self._model(m) for m in self.state.models]},
            media_type=_JSON,
            faults=call.faults,
        )

    async def get_model(self, request: Request, model: str) -> Response:
        call = await self.begin(request, model=model, needs_json=False)
        if isinstance(call, Response):
            return call
        if model not in self.state.models:
            return self.error(404, f"models/{model} is not found for API version v1beta")
        return json_response(self._model(model), media_type=_JSON, faults=call.faults)
