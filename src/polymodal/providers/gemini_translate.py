"""Gemini ``generateContent`` <-> OpenAI Chat Completions: requests, replies, stream events.

Pure translation, no I/O. Gemini function calls carry no id, so each tool call gets a
synthesized one that is stable: derived from the response id, the candidate, the call's
position, name and arguments, so a streamed and a non-streamed reading of one response
agree, and a replay gives the same ids.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    COMMON_PARAMS,
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Choice,
    Delta,
    FinishReason,
    Message,
    ToolCall,
    Usage,
    usage,
)
from polymodal.domain.errors import BadRequest, ContentFiltered, Unavailable
from polymodal.providers import errors, gemini_schema

WIRE = "gemini"
# Every common parameter is translated, or refused below when it has no faithful form;
# `user` is accepted and dropped (it labels the caller for abuse monitoring only).
_PARAMS = frozenset(COMMON_PARAMS)
_CONFIG = {
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
# Finish reasons that mean Gemini withheld (part of) the answer.
_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


def _refuse(message: str) -> BadRequest:
    return BadRequest(message, provider=WIRE)


# --- request -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Translated:
    body: dict[str, Any]
    single_tool_call: bool  # parallel_tool_calls=false: keep the first call of a candidate


def request_body(deployment: Deployment, request: ChatRequest) -> Translated:
    params = {k: v for k, v in request.params.items() if v is not None}
    for name in params:
        if name not in _PARAMS:
            raise _refuse(f"{name}: not supported by gemini deployments")
    if params.get("logprobs") or params.get("top_logprobs"):
        name = "logprobs" if params.get("logprobs") else "top_logprobs"
        raise _refuse(f"{name}: log probabilities are not supported for gemini deployments")
    system, contents = _contents(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {
        wire_name: params[name] for name, wire_name in _CONFIG.items() if name in params
    }
    if request.max_output_tokens is not None:
        config["maxOutputTokens"] = request.max_output_tokens
    if "stop" in params:
        stop = params["stop"]
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("n", 1) != 1:
        config["candidateCount"] = params["n"]
    if "response_format" in params:
        config.update(_response_format(params["response_format"]))
    if config:
        body["generationConfig"] = config
    if "tools" in params:
        body["tools"] = [{"functionDeclarations": _declarations(params["tools"])}]
    if "tool_choice" in params:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(params["tool_choice"])}
    return Translated(body, params.get("parallel_tool_calls") is False)


def _response_format(response_format: Any) -> dict[str, Any]:
    if not isinstance(response_format, dict):
        raise _refuse("response_format: expected an object")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        config: dict[str, Any] = {"responseMimeType": "application/json"}
        if (schema := spec.get("schema")) is not None:
            config["responseSchema"] = gemini_schema.convert(
                schema, "response_format.json_schema.schema"
            )
        return config
    raise _refuse(f"response_format.type: unsupported type {kind!r}")


def _declarations(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _refuse("tools: expected a list")
    declarations: list[dict[str, Any]] = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _refuse(f"tools[{j}].type: only function tools are supported")
        function = tool.get("function") or {}
        declaration: dict[str, Any] = {"name": function.get("name")}
        if description := function.get("description"):
            declaration["description"] = description
        if (parameters := function.get("parameters")) is not None:
            converted = gemini_schema.convert(parameters, f"tools[{j}].function.parameters")
            # Gemini rejects an OBJECT without properties; a tool without inputs has none.
            if converted.get("properties") or converted.get("type") != "OBJECT":
                declaration["parameters"] = converted
        declarations.append(declaration)
    return declarations


def _calling_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") == "function" and isinstance(name, str):
            return {"mode": "ANY", "allowedFunctionNames": [name]}
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    raise _refuse("tool_choice: expected auto, none, required or a named function")


def _image(url: Any, where: str) -> dict[str, Any]:
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, *options = header.split(";")
        if comma and "base64" in options and media_type:
            return {"inlineData": {"mimeType": media_type, "data": data}}
    raise _refuse(f"{where}.image_url.url: gemini deployments take images as base64 data: URLs")


def _parts(content: Any, where: str, *, images: bool) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _refuse(f"{where}.content: expected a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if text := part.get("text"):
                parts.append({"text": str(text)})
        elif kind == "image_url" and images:
            parts.append(_image((part.get("image_url") or {}).get("url"), f"{where}.content[{k}]"))
        else:
            raise _refuse(f"{where}.content[{k}].type: {kind!r} parts are not allowed here")
    return parts


def _function_call(call: ToolCall, where: str) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        args = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError as e:
        raise _refuse(f"{where}.function.arguments: not valid JSON") from e
    if not isinstance(args, dict):
        raise _refuse(f"{where}.function.arguments: must be a JSON object")
    return {"functionCall": {"name": function.get("name"), "args": args}}


def _function_response(name: str, content: Any, where: str) -> dict[str, Any]:
    text = "".join(p["text"] for p in _parts(content, where, images=False))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for functionResponse
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role: str = message.get("role", "")
        content = message.get("content")
        if role in ("system", "developer"):
            text = "\n".join(p["text"] for p in _parts(content, where, images=False))
            if text:
                system.append(text)
            continue
        if role == "user":
            parts = _parts(content, where, images=True)
        elif role == "assistant":
            role = "model"
            parts = _parts(content, where, images=False)
            for j, call in enumerate(message.get("tool_calls") or []):
                names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
                parts.append(_function_call(call, f"{where}.tool_calls[{j}]"))
        elif role == "tool":
            role = "user"
            name = names.get(message.get("tool_call_id", "")) or message.get("name")
            if not name:
                raise _refuse(f"{where}.tool_call_id: no earlier assistant tool call has this id")
            parts = [_function_response(name, content, where)]
        else:
            raise _refuse(f"{where}.role: unsupported role {role!r}")
        if not parts:
            continue  # an empty message says nothing, and Gemini rejects empty parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return "\n\n".join(system), contents


# --- response ------------------------------------------------------------------------------


def check_prompt(data: dict[str, Any]) -> None:
    feedback = data.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise ContentFiltered(
            f"gemini blocked the prompt (blockReason: {feedback['blockReason']})", provider=WIRE
        )


def check_finish(reason: Any) -> None:
    """Raise for a finish that is not a complete answer (reasons: STOP, MAX_TOKENS)."""
    if reason in _FILTERED:
        raise ContentFiltered(f"gemini withheld the answer (finishReason: {reason})", provider=WIRE)
    if reason not in ("STOP", "MAX_TOKENS"):
        raise Unavailable(
            f"gemini ended the answer with finishReason {reason}",
            provider=WIRE,
            code="unexpected_finish",
        )


def _finish(reason: Any, *, tool_calls: bool) -> FinishReason:
    check_finish(reason)
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def usage_of(meta: Any) -> Usage:
    """Thinking tokens are billed as output, tool-use prompt tokens as input."""
    if not isinstance(meta, dict):
        return usage(0, 0)
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    output = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return usage(prompt, output)


def call_id(response_id: str, candidate: int, position: int, name: str, arguments: str) -> str:
    digest = hashlib.sha256(
        f"{response_id}\0{candidate}\0{position}\0{name}\0{arguments}".encode()
    ).hexdigest()
    return "call_" + digest[:24]


def _read_parts(
    candidate: dict[str, Any], response_id: str, index: int, first_call: int
) -> tuple[list[str], list[ToolCall]]:
    """Text pieces and tool calls of one candidate (thought summaries left out)."""
    content = candidate.get("content") or {}
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in content.get("parts") or []:
        if part.get("thought"):
            continue
        if "text" in part:
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            call = part["functionCall"]
            name = str(call["name"])
            arguments = orjson.dumps(call.get("args") or {}).decode()
            identifier = call.get("id") or call_id(
                response_id, index, first_call + len(calls), name, arguments
            )
            calls.append(
                {
                    "id": str(identifier),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
    return texts, calls


def completion(data: Any, *, model: str, single_tool_call: bool) -> ChatCompletion:
    if not isinstance(data, dict):
        raise errors.malformed(WIRE, "response")
    check_prompt(data)
    try:
        response_id = str(data.get("responseId") or "")
        choices: list[Choice] = []
        for position, candidate in enumerate(data["candidates"]):
            index = int(candidate.get("index", position))
            if "finishReason" not in candidate:
                raise errors.malformed(WIRE, "response (a candidate without finishReason)")
            check_finish(candidate["finishReason"])
            texts, calls = _read_parts(candidate, response_id, index, 0)
            if single_tool_call:
                calls = calls[:1]
            choice: Choice = {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": "".join(texts) if texts or not calls else None,
                },
                "finish_reason": _finish(candidate["finishReason"], tool_calls=bool(calls)),
                "logprobs": None,
            }
            if calls:
                choice["message"]["tool_calls"] = calls
            choices.append(choice)
        totals = usage_of(data.get("usageMetadata"))
    except (KeyError, TypeError, ValueError, AttributeError, orjson.JSONEncodeError) as e:
        raise errors.malformed(WIRE, "response") from e
    if not choices:
        raise errors.malformed(WIRE, "response (no candidates)")
    return {
        "id": response_id or "gemini-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(data.get("modelVersion") or model),
        "choices": choices,
        "usage": totals,
    }


# --- stream --------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamTranslator:
    """Turns each streamed GenerateContentResponse into OpenAI chunks.

    Gemini has no end-of-stream event: the answer is complete when every candidate has
    reported a finishReason and the connection closes; `finish` checks that.
    """

    model: str
    single_tool_call: bool
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = ""
    usage: Usage = field(default_factory=lambda: usage(0, 0))
    # candidate -> tool calls streamed so far; its keys are the candidates seen
    _calls: dict[int, int] = field(default_factory=dict)
    _reasons: dict[int, str] = field(default_factory=dict)

    def chunk(self, index: int, delta: Delta, finish: FinishReason | None = None) -> ChatChunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }

    def feed(self, data: dict[str, Any]) -> list[ChatChunk]:
        check_prompt(data)
        try:
            return self._feed(data)
        except (KeyError, TypeError, ValueError, AttributeError, orjson.JSONEncodeError) as e:
            raise errors.malformed(WIRE, "stream event") from e

    def _feed(self, data: dict[str, Any]) -> list[ChatChunk]:
        self.id = self.id or str(data.get("responseId") or "gemini-" + uuid.uuid4().hex)
        self.model = str(data.get("modelVersion") or self.model)
        if "usageMetadata" in data:
            self.usage = usage_of(data["usageMetadata"])
        chunks: list[ChatChunk] = []
        for position, candidate in enumerate(data.get("candidates") or []):
            index = int(candidate.get("index", position))
            if (reason := candidate.get("finishReason")) is not None:
                check_finish(reason)
                self._reasons[index] = str(reason)
            first = index not in self._calls
            made = self._calls.setdefault(index, 0)
            texts, calls = _read_parts(candidate, self.id, index, made)
            if self.single_tool_call:
                calls = calls[: max(1 - made, 0)]
            self._calls[index] = made + len(calls)
            deltas: list[Delta] = [{"content": text} for text in texts if text]
            if calls:
                deltas.append(
                    {
                        "tool_calls": [
                            {
                                "index": made + k,
                                "id": call["id"],
                                "type": "function",
                                "function": {
                                    "name": call["function"]["name"],
                                    "arguments": call["function"]["arguments"],
                                },
                            }
                            for k, call in enumerate(calls)
                        ]
                    }
                )
            if first:  # OpenAI streams open each choice with the role
                opening: Delta = {"role": "assistant"}
                opening.update(deltas[0] if deltas else {"content": ""})
                deltas[:1] = [opening]
            chunks.extend(self.chunk(index, delta) for delta in deltas)
        return chunks

    def finish(self) -> list[ChatChunk]:
        """The closing chunks once the connection ended; truncated if any answer was not."""
        if not self._calls or any(i not in self._reasons for i in self._calls):
            raise errors.truncated(WIRE)
        chunks = [
            self.chunk(i, {}, _finish(self._reasons[i], tool_calls=self._calls[i] > 0))
            for i in sorted(self._calls)
        ]
        chunks.append(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage,
            }
        )
        return chunks
