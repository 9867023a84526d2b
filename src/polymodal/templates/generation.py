"""Generate a template's answer through the gateway, then hold it to the template's
promises: the output language (one retry with a stronger instruction when it is wrong),
the JSON Schema (one repair attempt) and the disclaimer.

The gateway is reached through ``ChatCaller``, a two-method protocol the API layer
implements with the real ``Gateway`` (services do not import each other): the caller
attaches the principal and request id, the feature tag ``template:<id>`` comes from here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

import orjson

from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Message,
    Usage,
    usage,
)
from polymodal.domain.errors import InvalidModelOutput
from polymodal.observability.metrics import TemplateMetrics
from polymodal.templates import jsonout, language
from polymodal.templates.prompting import Rendered, disclaimer_suffix

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

# Streaming: hold back this many characters of the answer to check its language before
# the first byte reaches the client (a wrong-language stream is then restarted unseen).
LANGUAGE_PROBE_CHARS = 240


class ChatCaller(Protocol[R_co]):
    """The gateway as a template generation sees it. ``R_co``: how the call was routed."""

    async def chat(self, feature: str, request: ChatRequest) -> tuple[ChatCompletion, R_co]: ...

    async def chat_stream(
        self, feature: str, request: ChatRequest
    ) -> tuple[AsyncIterator[ChatChunk], R_co]: ...


@dataclass(frozen=True, slots=True)
class Options:
    model: str | None = None  # None: the template's tier ("tier:<tier>")
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(slots=True)
class Generation(Generic[R]):
    output: str  # the answer as delivered (disclaimer included, JSON re-serialised)
    document: Any  # the parsed JSON for JSON templates, else None
    model: str
    routed: R
    usage: Usage = field(default_factory=lambda: usage(0, 0))
    finish_reason: str | None = None
    language_retry: bool = False
    output_language: str | None = None  # detected in the answer (None: too short to tell)
    json_repaired: bool = False
    calls: int = 0


def feature_of(rendered: Rendered) -> str:
    return f"template:{rendered.template.id}"


def chat_request(
    rendered: Rendered,
    options: Options,
    *,
    stream: bool,
    messages: list[Message] | None = None,
) -> ChatRequest:
    params: dict[str, Any] = {}
    if options.max_tokens is not None:
        params["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        params["temperature"] = options.temperature
    return ChatRequest(
        model=options.model or f"tier:{rendered.template.tier}",
        messages=messages if messages is not None else rendered.messages(),
        stream=stream,
        params=params,
    )


def _text(completion: ChatCompletion) -> tuple[str, str | None]:
    choice = completion["choices"][0] if completion["choices"] else None
    if choice is None:
        return "", None
    return choice["message"].get("content") or "", choice.get("finish_reason")


def _add(total: Usage, completion: ChatCompletion) -> None:
    usage = completion.get("usage")
    if usage:
        total["prompt_tokens"] += usage["prompt_tokens"]
        total["completion_tokens"] += usage["completion_tokens"]
        total["total_tokens"] += usage["total_tokens"]


def _repair_messages(rendered: Rendered, answer: str, errors: list[str]) -> list[Message]:
    problems = "\n".join(f"- {e}" for e in errors)
    return [
        *rendered.messages(),
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": "Your answer does not validate against the required JSON Schema:\n"
            f"{problems}\n\nReturn the corrected JSON document only: no code fence, no "
            "comments, no text before or after it. Keep every correct part unchanged.",
        },
    ]


async def generate(
    rendered: Rendered,
    caller: ChatCaller[R],
    options: Options,
    metrics: TemplateMetrics | None = None,
) -> Generation[R]:
    """One answer, checked: language (one retry), JSON Schema (one repair), disclaimer."""
    feature, fmt, lang = feature_of(rendered), rendered.output_format, rendered.voice.lang
    completion, routed = await caller.chat(feature, chat_request(rendered, options, stream=False))
    result = Generation[R](output="", document=None, model=completion["model"], routed=routed)
    result.calls = 1
    _add(result.usage, completion)
    text, result.finish_reason = _text(completion)

    wrong = language.wrong_language(text, fmt, lang)
    if wrong is not None:
        retry = chat_request(
            rendered, options, stream=False, messages=rendered.messages(stronger=True, wrong=wrong)
        )
        completion, result.routed = await caller.chat(feature, retry)
        result.calls += 1
        result.language_retry = True
        _add(result.usage, completion)
        text, result.finish_reason = _text(completion)
        if metrics is not None:
            metrics.language_retry(lang, fixed=language.wrong_language(text, fmt, lang) is None)

    if rendered.template.output.json_schema is not None:
        schema = rendered.template.output.json_schema
        check = jsonout.validate(text, schema)
        if not check.ok:
            repair = chat_request(
                rendered,
                options,
                stream=False,
                messages=_repair_messages(rendered, text, check.errors),
            )
            completion, result.routed = await caller.chat(feature, repair)
            result.calls += 1
            _add(result.usage, completion)
            text, result.finish_reason = _text(completion)
            check = jsonout.validate(text, schema)
            if metrics is not None:
                metrics.json_repair(repaired=check.ok)
            if not check.ok:
                raise InvalidModelOutput(
                    "output: the model's answer does not match the template's JSON Schema "
                    f"after one repair attempt ({check.errors[0]}).",
                    code="invalid_json_output",
                )
            result.json_repaired = True
        result.document = check.document
        text = orjson.dumps(check.document, option=orjson.OPT_INDENT_2).decode()

    result.model = completion["model"]
    result.output_language = language.detect(language.prose(text, fmt)).lang
    result.output = text.rstrip() + disclaimer_suffix(rendered)
    if metrics is not None:
        metrics.generation(lang, fmt)
    return result


# --- streaming -----------------------------------------------------------------------------


@dataclass(slots=True)
class StreamInfo:
    """What the stream's last chunk reports under ``polymodal`` (and the API's headers)."""

    language_retry: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _delta_text(chunk: ChatChunk) -> str:
    return "".join(c["delta"].get("content") or "" for c in chunk["choices"])


async def _probe(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    """Buffer chunks until there is enough text to judge the language (or the end)."""
    head: list[ChatChunk] = []
    size = 0
    async for chunk in stream:
        head.append(chunk)
        size += len(_delta_text(chunk))
        if size >= LANGUAGE_PROBE_CHARS:
            break
    return head


async def _close(stream: AsyncIterator[ChatChunk]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def _chunk(like: dict[str, Any], content: str | None, finish: str | None) -> ChatChunk:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    return cast(
        ChatChunk,
        {
            "id": like.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": like.get("created") or int(time.time()),
            "model": like.get("model") or "",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        },
    )


async def _relay(
    head: list[ChatChunk],
    rest: AsyncIterator[ChatChunk],
    suffix: str,
    info: dict[str, Any],
) -> AsyncIterator[ChatChunk]:
    """The buffered head, then the rest; the disclaimer goes in just before the finishing
    chunk, which also carries ``polymodal`` (template id, language, disclaimer)."""
    last: dict[str, Any] = {}
    finished = False
    try:
        async for chunk in _achain(head, rest):
            last = cast(dict[str, Any], chunk)
            if any(c.get("finish_reason") for c in chunk["choices"]) and not finished:
                finished = True
                if suffix:
                    yield _chunk(last, suffix, None)
                last["polymodal"] = info
            yield chunk
        if not finished:
            if suffix:
                yield _chunk(last, suffix, None)
            final = cast(dict[str, Any], _chunk(last, None, "stop"))
            final["polymodal"] = info
            yield cast(ChatChunk, final)
    finally:
        await _close(rest)


async def _achain(
    head: list[ChatChunk], rest: AsyncIterator[ChatChunk]
) -> AsyncIterator[ChatChunk]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


async def generate_stream(
    rendered: Rendered,
    caller: ChatCaller[R],
    options: Options,
    metrics: TemplateMetrics | None = None,
) -> tuple[AsyncIterator[ChatChunk], R, StreamInfo]:
    """Start a streamed answer. The language is checked on the first
    ``LANGUAGE_PROBE_CHARS`` before anything is sent; a JSON answer is generated whole
    (it must validate before the client sees it) and then sent as one chunk."""
    fmt, lang = rendered.output_format, rendered.voice.lang
    info: dict[str, Any] = {
        "template": rendered.template.id,
        "version": rendered.template.version,
        "lang": lang,
        "locale": rendered.voice.locale,
        "register": rendered.voice.register,
        "disclaimer": rendered.disclaimer,
    }
    if fmt == "json":
        done = await generate(rendered, caller, options, metrics)
        info.update(language_retry=done.language_retry, json_repaired=done.json_repaired)
        like = {"model": done.model}
        chunks = [
            _chunk(like, done.output, None),
            _chunk(like, None, done.finish_reason or "stop"),
        ]
        cast(dict[str, Any], chunks[-1])["polymodal"] = info
        return _achain(chunks, _empty()), done.routed, StreamInfo(done.language_retry, info)

    feature = feature_of(rendered)
    stream, routed = await caller.chat_stream(feature, chat_request(rendered, options, stream=True))
    head = await _probe(stream)
    text = "".join(_delta_text(c) for c in head)
    wrong = language.wrong_language(text, fmt, lang)
    retried = False
    if wrong is not None:
        await _close(stream)
        retry = chat_request(
            rendered, options, stream=True, messages=rendered.messages(stronger=True, wrong=wrong)
        )
        stream, routed = await caller.chat_stream(feature, retry)
        head = await _probe(stream)
        retried = True
        if metrics is not None:
            text = "".join(_delta_text(c) for c in head)
            metrics.language_retry(lang, fixed=language.wrong_language(text, fmt, lang) is None)
    if metrics is not None:
        metrics.generation(lang, fmt)
    info["language_retry"] = retried
    return (
        _relay(head, stream, disclaimer_suffix(rendered), info),
        routed,
        StreamInfo(retried, info),
    )


async def _empty() -> AsyncIterator[ChatChunk]:
    return
    yield  # an async generator that yields nothing
