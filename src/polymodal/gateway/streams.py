"""Stream plumbing: accumulate chunks into a completion, and continue a broken stream on
another deployment so the client sees one coherent answer."""

from __future__ import annotations

import dataclasses
from typing import Any

from polymodal.domain.chat import ChatChunk, ChatCompletion, ChatRequest, Message, Usage

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly from where it stopped, "
    "without repeating any of it and without any preamble."
)


class Accumulator:
    """Everything a stream said so far: text, tool calls, finish reason, usage."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = 0
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.chunks = 0

    def feed(self, chunk: ChatChunk) -> None:
        self.chunks += 1
        if not self.id:
            self.id, self.model, self.created = chunk["id"], chunk["model"], chunk["created"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if content := delta.get("content"):
                self.text.append(content)
            for call in delta.get("tool_calls") or []:
                slot = self.tool_calls.setdefault(
                    call["index"],
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    @property
    def content(self) -> str:
        return "".join(self.text)

    def completion(self) -> ChatCompletion:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        result: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": self.finish_reason or "stop"}
            ],
        }
        if self.usage:
            result["usage"] = self.usage
        return result  # type: ignore[return-value]


def continuation_request(request: ChatRequest, partial: str, produced_tokens: int) -> ChatRequest:
    """The same request, with the partial answer as context and an instruction to go on."""
    messages: list[Message] = [
        *request.messages,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    params = dict(request.params)
    for key in ("max_tokens", "max_completion_tokens"):
        if key in params:
            params[key] = max(int(params[key]) - produced_tokens, 1)
    return dataclasses.replace(request, messages=messages, params=params)


def as_continuation(chunk: ChatChunk, original: Accumulator) -> ChatChunk:
    """A chunk of the continuing stream, dressed as part of the original one."""
    chunk["id"] = original.id or chunk["id"]
    chunk["model"] = original.model or chunk["model"]
    chunk["created"] = original.created or chunk["created"]
    for choice in chunk["choices"]:
        choice["delta"].pop("role", None)
    return chunk
