"""Cohere wire: ``POST /v1/embed`` (and ``/v2/embed``).

Auth: ``Authorization: Bearer <key>``. Errors: ``{"message": "..."}``.
v1 answers ``response_type: "embeddings_floats"`` (``embeddings`` is a list of
float vectors) unless ``embedding_types`` is given, then
``"embeddings_by_type"`` (``embeddings`` is an object keyed by type:
``float``, ``int8``, ``uint8``, ``binary``, ``ubinary``); v2 always answers by
type. ``meta.billed_units.input_tokens`` counts words.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from polymodal.testing.fakes.base import WireApp, bearer_token, int_or_none
from polymodal.testing.fakes.core import Faults, count_words, embed_vector
from polymodal.testing.fakes.responses import Frame, json_response

_ERRORS: dict[int, str] = {
    400: "invalid request",
    401: "invalid api token",
    402: "Please add or update your payment method at "
    "https://dashboard.cohere.com/billing?tab=payment to continue",
    404: "not found",
    429: "You are using a Trial key, which is limited to 100 API calls / minute. You can "
    "continue to use the Trial key for free or upgrade to a Production key with higher rate "
    "limits at 'https://dashboard.cohere.com/api-keys'. Contact us on "
    "'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with any questions",
    499: "request cancelled",
    500: "internal server error, this has been reported to our developers",
    503: "service unavailable",
}
_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
_INPUT_TYPES = frozenset(
    {"search_document", "search_query", "classification", "clustering", "image"}
)


def _by_type(vec: Sequence[float], kind: str) -> list[Any]:
    if kind == "float":
        return list(vec)
    scale = 127 / (max(abs(v) for v in vec) or 1.0)
    if kind in ("int8", "uint8"):
        q = [max(-128, min(127, round(v * scale))) for v in vec]
        return q if kind == "int8" else [v + 128 for v in q]
    packed: list[int] = []
    for i in range(0, len(vec), 8):
        byte = 0
        for v in vec[i : i + 8]:
            byte = (byte << 1) | (v > 0)
        byte <<= 8 - len(vec[i : i + 8])
        packed.append(byte if kind == "ubinary" else byte - 128)
    return packed


class CohereApp(WireApp):
    wire = "cohere"
    default_models = (
        "embed-english-v3.0",
        "embed-multilingual-v3.0",
        "embed-english-light-v3.0",
        "embed-v4.0",
    )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/embed", self.embed, methods=["POST"]),
            Route("/v2/embed", self.embed, methods=["POST"]),
        ]

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
        default = _ERRORS.get(status, _ERRORS[500] if status >= 500 else _ERRORS[400])
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["retry-after"] = retry_after
        return json_response(
            {"message": message if message is not None else default}, status=status, headers=hdrs
        )

    def auth_error(self, request: Request) -> Response | None:
        key = self.state.api_key
        if key is None:
            return None
        token = bearer_token(request)
        if not token:
            return self.error(401, "no api key supplied")
        if token != key:
            return self.error(401, "invalid api token")
        return None

    def invalid_json(self) -> Response:
        return self.error(400, "invalid request: unable to parse request body as JSON")

    def not_found(self, request: Request) -> Response:
        return self.error(404, "404 page not found")

    def stream_error_frame(self, faults: Faults) -> Frame:  # no streaming endpoints
        return (b"", b"", b"")

    async def embed(self, request: Request) -> Response:
        call = await self.begin(request)
        if isinstance(call, Response):
            return call
        body = call.body
        v2 = request.scope["path"].startswith("/v2/")
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts:
            return self.error(400, "invalid request: texts must be a non-empty list of strings")
        if len(texts) > 96:
            return self.error(
                400,
                f"invalid request: texts must have at most 96 items - received {len(texts)}",
            )
        if not all(isinstance(t, str) for t in texts):
            return self.error(400, "invalid request: texts must be a list of strings")
        model = body.get("model")
        if model is None and not v2:
            model = "embed-english-v2.0"
        if not isinstance(model, str) or not model:
            return self.error(400, "invalid request: model must be specified")
        input_type = body.get("input_type")
        needs_input_type = v2 or "v3" in model or "v4" in model
        if input_type is None and needs_input_type:
            return self.error(
                400, "invalid request: valid input_type must be provided with the provided model"
            )
        if input_type is not None and input_type not in _INPUT_TYPES:
            return self.error(
                400,
                f"invalid request: input_type must be one of {', '.join(sorted(_INPUT_TYPES))}",
            )
        types = body.get("embedding_types")
        if types is not None and (
            not isinstance(types, list) or not types or any(t not in _TYPES for t in types)
        ):
            return self.error(
                400, f"invalid request: embedding_types must be a list of {', '.join(_TYPES)}"
            )
        dim = self.state.embed_dim(model, int_or_none(body.get("output_dimension")) if v2 else None)
        vectors = [embed_vector(t, dim) for t in texts]
        embeddings: Any
        if types is None and not v2:
            response_type = "embeddings_floats"
            embeddings = vectors
        else:
            response_type = "embeddings_by_type"
            embeddings = {kind: [_by_type(v, kind) for v in vectors] for kind in types or ["float"]}
        tokens = sum(count_words(t) for t in texts)
        return json_response(
            {
                "id": str(uuid.UUID(int=int(self.state.new_id(32), 16))),
                "texts": texts,
                "embeddings": embeddings,
                "meta": {
                    "api_version": {"version": "2" if v2 else "1"},
                    "billed_units": {"input_tokens": tokens},
                },
                "response_type": response_type,
            },
            faults=call.faults,
        )
