"""RAG chatbots: configuration, stored conversations, messages (JSON or SSE), and an
OpenAI-compatible endpoint so any OpenAI client can talk to a chatbot:

    OpenAI(base_url=".../v1/chatbots/<id>", api_key=...).chat.completions.create(...)

posts to ``/v1/chatbots/<id>/chat/completions``. Answers carry ``[n]`` markers in the
text and a ``citations`` array (n -> document title, page, chunk) as an extension field
(on the last chunk when streaming). ``conversation_id`` (extension) makes the call part
of a stored conversation; without it the call is stateless like OpenAI's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from polymodal.api.body import body_openapi, parse
from polymodal.api.deps import CurrentPrincipal, State, authenticate
from polymodal.api.deps import state_of as app_state_of
from polymodal.api.errors import error_body
from polymodal.api.responses import JSONResponse
from polymodal.api.state import AppState
from polymodal.api.v1.callers import GatewayCaller
from polymodal.api.v1.openai_compat import SSE_HEADERS, _route_headers
from polymodal.domain.chat import Message
from polymodal.domain.errors import NotFound, PolymodalError, ServiceUnavailable, ValidationFailed
from polymodal.domain.principal import Principal
from polymodal.gateway.service import Routed
from polymodal.rag.chatbot_reply import Answer, ChatbotReplies, Prepared, StreamedAnswer
from polymodal.rag.chatbots import ChatbotSpec, ChatbotView, ConversationView, MessageView

router = APIRouter(prefix="/v1/chatbots", tags=["chatbots"])
MAX_PAGE = 100


def _service(state: AppState) -> ChatbotReplies:
    if state.chatbots is None:
        raise ServiceUnavailable("chatbots are not available on this server.")
    return state.chatbots


def _caller(request: Request, principal: Principal, state: AppState) -> GatewayCaller:
    return GatewayCaller.of(request, principal, state)


def _id(value: str, what: str) -> uuid.UUID:
    """Path ids: a malformed one is as unknown as a well-formed id that does not exist."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} '{value}' does not exist.", code=f"{what}_not_found") from None


# --- bodies ---------------------------------------------------------------------------------


class ChatbotFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(default=None, max_length=20_000, description="Persona.")
    language: str | None = Field(
        default=None, max_length=16, description="auto (the user's language) or en, es, ..."
    )
    tier: str | None = Field(default=None, description="simple, complex or critical.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_k: int | None = Field(default=None, ge=1, le=50)
    citation_style: str | None = Field(default=None, description="numeric, footnotes or none.")
    relevance_threshold: float | None = Field(default=None, ge=0, le=1)


class ChatbotCreate(ChatbotFields):
    name: str = Field(min_length=1, max_length=100)
    kb_ids: list[uuid.UUID] = Field(min_length=1, max_length=10)


class ChatbotUpdate(ChatbotFields):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    kb_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=10)


def _spec(body: ChatbotFields) -> ChatbotSpec:
    return ChatbotSpec(**body.model_dump(exclude_unset=True))


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="", max_length=200)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(max_length=100_000)
    stream: bool = False


class ChatbotCompletionIn(BaseModel):
    """OpenAI's request shape. The chatbot decides model, tier, temperature and sources,
    so ``model`` is accepted (clients must send one) but not used; the last message is
    the question and must come from the user."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(default="chatbot", max_length=200)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    conversation_id: uuid.UUID | None = Field(
        default=None, description="polymodal extension: continue a stored conversation."
    )


COMPLETION_BODY = TypeAdapter(ChatbotCompletionIn)


# --- response shapes --------------------------------------------------------------------------


def _chatbot_public(bot: ChatbotView) -> dict[str, Any]:
    return {
        "id": str(bot.id),
        "object": "chatbot",
        "name": bot.name,
        "kb_ids": [str(k) for k in bot.kb_ids],
        "system_prompt": bot.system_prompt,
        "language": bot.language,
        "tier": bot.tier,
        "temperature": bot.temperature,
        "top_k": bot.top_k,
        "citation_style": bot.citation_style,
        "relevance_threshold": bot.relevance_threshold,
        "created_at": bot.created_at.isoformat(),
        "updated_at": bot.updated_at.isoformat(),
    }


def _message_public(m: MessageView) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "chatbot.message",
        "role": m.role,
        "content": m.content,
        "citations": m.citations,
        "meta": m.meta,
        "created_at": m.created_at.isoformat(),
    }


def _conversation_public(c: ConversationView, *, with_messages: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(c.id),
        "object": "chatbot.conversation",
        "chatbot_id": str(c.chatbot_id),
        "title": c.title,
        "summary": c.summary,
        "message_count": c.message_count,
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
    }
    if with_messages:
        out["messages"] = [_message_public(m) for m in c.messages]
    return out


def _completion(done: Answer[Routed]) -> dict[str, Any]:
    return {
        "id": done.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": done.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done.content},
                "finish_reason": done.finish_reason,
            }
        ],
        "usage": done.usage,
        **done.extension(),
    }


def _headers(routed: Routed | None, prepared: Prepared, caller: GatewayCaller) -> dict[str, str]:
    headers = {
        "content-language": prepared.language,
        "x-polymodal-retrieval-cache": prepared.outcome.cache,
    }
    headers.update(caller.limit_headers())
    return {**headers, **_route_headers(routed)} if routed is not None else headers


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """OpenAI's SSE framing (the last chunk carries the citations); a failure after the
    first byte ends with an in-band error event and no ``[DONE]``."""
    try:
        async for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except PolymodalError as e:
        yield b"data: " + orjson.dumps(error_body(e.type, e.message, e.code)) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def _streaming(streamed: StreamedAnswer[Routed], caller: GatewayCaller) -> StreamingResponse:
    return StreamingResponse(
        _sse(streamed.chunks),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **_headers(streamed.routed, streamed.prepared, caller)},
    )


# --- chatbots -------------------------------------------------------------------------------


@router.post("", status_code=201)
async def create_chatbot(
    body: ChatbotCreate, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    bot = await _service(state).store.create(principal, _spec(body))
    return JSONResponse(_chatbot_public(bot), status_code=201)


@router.get("")
async def list_chatbots(principal: CurrentPrincipal, state: State) -> JSONResponse:
    bots = await _service(state).store.list_all(principal)
    return JSONResponse({"object": "list", "data": [_chatbot_public(b) for b in bots]})


@router.get("/{chatbot_id}")
async def get_chatbot(chatbot_id: str, principal: CurrentPrincipal, state: State) -> JSONResponse:
    bot = await _service(state).store.get(principal, _id(chatbot_id, "chatbot"))
    return JSONResponse(_chatbot_public(bot))


@router.patch("/{chatbot_id}")
async def update_chatbot(
    chatbot_id: str, body: ChatbotUpdate, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    bot = await _service(state).store.update(principal, _id(chatbot_id, "chatbot"), _spec(body))
    return JSONResponse(_chatbot_public(bot))


@router.delete("/{chatbot_id}", status_code=204)
async def delete_chatbot(chatbot_id: str, principal: CurrentPrincipal, state: State) -> Response:
    """Delete the chatbot and its conversations."""
    await _service(state).store.delete(principal, _id(chatbot_id, "chatbot"))
    return Response(status_code=204)


# --- conversations ------------------------------------------------------------------------


@router.post("/{chatbot_id}/conversations", status_code=201)
async def create_conversation(
    chatbot_id: str,
    principal: CurrentPrincipal,
    state: State,
    body: ConversationCreate | None = None,
) -> JSONResponse:
    conv = await _service(state).store.create_conversation(
        principal, _id(chatbot_id, "chatbot"), title=body.title if body else ""
    )
    return JSONResponse(_conversation_public(conv, with_messages=True), status_code=201)


@router.get("/{chatbot_id}/conversations")
async def list_conversations(
    chatbot_id: str,
    principal: CurrentPrincipal,
    state: State,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # past int64 the database fails
) -> JSONResponse:
    convs, total = await _service(state).store.list_conversations(
        principal, _id(chatbot_id, "chatbot"), limit=limit, offset=offset
    )
    return JSONResponse(
        {
            "object": "list",
            "data": [_conversation_public(c, with_messages=False) for c in convs],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


@router.get("/{chatbot_id}/conversations/{conversation_id}")
async def get_conversation(
    chatbot_id: str, conversation_id: str, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    conv = await _service(state).store.get_conversation(
        principal, _id(chatbot_id, "chatbot"), _id(conversation_id, "conversation")
    )
    return JSONResponse(_conversation_public(conv, with_messages=True))


@router.delete("/{chatbot_id}/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    chatbot_id: str, conversation_id: str, principal: CurrentPrincipal, state: State
) -> Response:
    await _service(state).store.delete_conversation(
        principal, _id(chatbot_id, "chatbot"), _id(conversation_id, "conversation")
    )
    return Response(status_code=204)


@router.post("/{chatbot_id}/conversations/{conversation_id}/messages", response_model=None)
async def post_message(
    chatbot_id: str,
    conversation_id: str,
    body: MessageIn,
    request: Request,
    principal: CurrentPrincipal,
    state: State,
) -> JSONResponse | StreamingResponse:
    """Ask the chatbot; the question and its answer are stored in the conversation.
    ``stream: true`` answers with SSE chunks (OpenAI's shape; citations on the last)."""
    service = _service(state)
    caller = _caller(request, principal, state)
    prepared = await service.prepare(
        principal,
        _id(chatbot_id, "chatbot"),
        content=body.content,
        caller=caller,
        conversation_id=_id(conversation_id, "conversation"),
    )
    if body.stream:
        return _streaming(await service.reply_stream(principal, prepared, caller), caller)
    done = await service.reply(principal, prepared, caller)
    return JSONResponse(
        {
            "object": "chatbot.reply",
            "message": {
                "id": done.message_id,
                "role": "assistant",
                "content": done.content,
                "citations": done.citations,
            },
            "model": done.model,
            "usage": done.usage,
            **done.extension(),
        },
        headers=_headers(done.routed, prepared, caller),
    )


# --- OpenAI-compatible --------------------------------------------------------------------


@router.post(
    "/{chatbot_id}/chat/completions",
    response_model=None,
    openapi_extra=body_openapi(ChatbotCompletionIn),
)
async def chat_completions(chatbot_id: str, request: Request) -> JSONResponse | StreamingResponse:
    """Talk to the chatbot with any OpenAI client (``base_url=.../v1/chatbots/<id>``)."""
    state = app_state_of(request)
    principal = await authenticate(request, state)
    body = await parse(request, COMPLETION_BODY)
    last = body.messages[-1]
    if last["role"] != "user" or not isinstance(last.get("content"), str):
        raise ValidationFailed(
            f"messages.{len(body.messages) - 1}: the last message must be the user's "
            "question as text.",
            param=f"messages.{len(body.messages) - 1}",
        )
    service = _service(state)
    caller = _caller(request, principal, state)
    prepared = await service.prepare(
        principal,
        _id(chatbot_id, "chatbot"),
        content=str(last.get("content") or ""),
        caller=caller,
        conversation_id=body.conversation_id,
        history=body.messages[:-1] if body.conversation_id is None else (),
        param=f"messages.{len(body.messages) - 1}.content",
    )
    if body.stream:
        return _streaming(await service.reply_stream(principal, prepared, caller), caller)
    done = await service.reply(principal, prepared, caller)
    return JSONResponse(_completion(done), headers=_headers(done.routed, prepared, caller))
