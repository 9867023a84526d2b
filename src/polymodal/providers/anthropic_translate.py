"""Anthropic Messages <-> OpenAI Chat Completions: request bodies, replies, stream events.

Pure translation, no I/O: `anthropic.py` sends what `request_body` builds and feeds what
comes back through `completion` or a `StreamTranslator`.

``response_format`` (json_object / json_schema) is implemented with a forced tool, the
way Anthropic documents JSON output: the schema becomes the ``input_schema`` of a tool
named `JSON_TOOL`, ``tool_choice`` forces it (or, when the caller offers tools of its
own and lets the model choose, forces *some* tool), and the tool's input comes back as
the message ``content``. The schema's root must be an object, as a tool input is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    COMMON_PARAMS,
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Delta,
    FinishReason,
    Message,
    ToolCall,
    Usage,
    usage,
)
from polymodal.domain.errors import BadRequest, ContentFiltered
from polymodal.providers import errors

WIRE = "anthropic"
# Anthropic requires max_tokens; used when neither the request nor the deployment sets one.
DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_response"
_JSON_TOOL_DESCRIPTION = "Give the answer as this tool's input, a JSON value matching its schema."
# Every common parameter is translated, or refused below when it has no faithful form;
# `seed` is accepted and dropped (OpenAI documents it as best-effort; Anthropic has none).
_PARAMS = frozenset(COMMON_PARAMS)
_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def _refuse(message: str) -> BadRequest:
    return BadRequest(message, provider=WIRE)


# --- request -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Translated:
    body: dict[str, Any]
    json_mode: bool  # the answer comes back as the input of JSON_TOOL


def request_body(deployment: Deployment, request: ChatRequest, *, stream: bool) -> Translated:
    params = {k: v for k, v in request.params.items() if v is not None}
    _check_params(params)
    system, messages = _messages(request.messages)
    body: dict[str, Any] = {
        "model": deployment.model,
        "max_tokens": request.max_output_tokens
        or deployment.max_output_tokens
        or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = system
    for name in ("temperature", "top_p"):
        if name in params:
            body[name] = params[name]
    if "stop" in params:
        stop = params["stop"]
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if "user" in params:
        body["metadata"] = {"user_id": str(params["user"])}
    tools, tool_choice, json_mode = _tooling(params)
    if tools:
        body["tools"] = tools
    if tool_choice:
        body["tool_choice"] = tool_choice
    if stream:
        body["stream"] = True
    return Translated(body, json_mode)


def _check_params(params: dict[str, Any]) -> None:
    for name in params:
        if name not in _PARAMS:
            raise _refuse(f"{name}: not supported by anthropic deployments")
    if params.get("n", 1) != 1:
        raise _refuse("n: anthropic deployments return one choice; n must be 1")
    if params.get("logprobs") or params.get("top_logprobs"):
        name = "logprobs" if params.get("logprobs") else "top_logprobs"
        raise _refuse(f"{name}: anthropic deployments do not return log probabilities")
    if params.get("temperature", 0) > 1:
        # OpenAI's scale goes to 2, Anthropic's to 1; rescaling would change the meaning.
        raise _refuse("temperature: anthropic deployments accept 0 to 1")
    for name in ("presence_penalty", "frequency_penalty"):
        if params.get(name, 0) != 0:
            raise _refuse(f"{name}: anthropic deployments have no {name.replace('_', ' ')}")


def _text_only(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _refuse(f"{where}.content: expected a string or a list of parts")
    texts: list[str] = []
    for k, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise _refuse(f"{where}.content[{k}]: only text parts are allowed here")
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def _image(url: Any, where: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise _refuse(f"{where}.image_url.url: expected a string")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, *options = header.split(";")
        if not comma or "base64" not in options or not media_type:
            raise _refuse(f"{where}.image_url.url: data URLs must be base64 with a media type")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _refuse(f"{where}.image_url.url: expected a data: or http(s) URL")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Text and image blocks of user or tool content (empty text is left out)."""
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _refuse(f"{where}.content: expected a string or a list of parts")
    blocks: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if text := part.get("text"):
                blocks.append({"type": "text", "text": str(text)})
        elif kind == "image_url":
            blocks.append(_image((part.get("image_url") or {}).get("url"), f"{where}.content[{k}]"))
        else:
            raise _refuse(f"{where}.content[{k}].type: unsupported part type {kind!r}")
    return blocks


def _tool_use(call: ToolCall, where: str) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError as e:
        raise _refuse(f"{where}.function.arguments: not valid JSON") from e
    if not isinstance(parsed, dict):
        raise _refuse(f"{where}.function.arguments: must be a JSON object")
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": parsed}


def _messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """System text, and turns that alternate user/assistant as Anthropic requires."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            if text := _text_only(content, where):
                system.append(text)
            continue
        if role == "user":
            blocks = _blocks(content, where)
        elif role == "assistant":
            text = _text_only(content, where)
            blocks = [{"type": "text", "text": text}] if text else []
            for j, call in enumerate(message.get("tool_calls") or []):
                blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
        elif role == "tool":
            role = "user"
            call_id = message.get("tool_call_id")
            if not call_id:
                raise _refuse(f"{where}.tool_call_id: required for tool messages")
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            if parts := _blocks(content, where):
                result["content"] = parts
            blocks = [result]
        else:
            raise _refuse(f"{where}.role: unsupported role {role!r}")
        if not blocks:
            continue  # an empty message says nothing, and Anthropic rejects it
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # In a user turn, tool results must come before any other content.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return "\n\n".join(system), turns


def _tools(specs: Any) -> list[dict[str, Any]]:
    if not isinstance(specs, list):
        raise _refuse("tools: expected a list")
    tools: list[dict[str, Any]] = []
    for j, spec in enumerate(specs):
        if not isinstance(spec, dict) or spec.get("type") != "function":
            raise _refuse(f"tools[{j}].type: only function tools are supported")
        function = spec.get("function") or {}
        tool: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or _EMPTY_SCHEMA,
        }
        if description := function.get("description"):
            tool["description"] = description
        tools.append(tool)
    return tools


def _json_tool(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        raise _refuse("response_format: expected an object")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
        description = _JSON_TOOL_DESCRIPTION
    elif kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object"}
        description = " ".join(filter(None, [_JSON_TOOL_DESCRIPTION, spec.get("description")]))
    else:
        raise _refuse(f"response_format.type: unsupported type {kind!r}")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise _refuse(
            "response_format.json_schema.schema: anthropic deployments need an object at the root"
        )
    return {"name": JSON_TOOL, "description": description, "input_schema": schema}


def _tooling(
    params: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    """(tools, tool_choice, json_mode) from tools, tool_choice, parallel_tool_calls and
    response_format."""
    tools = _tools(params["tools"]) if "tools" in params else []
    choice = params.get("tool_choice", "auto")
    json_tool = _json_tool(params["response_format"]) if "response_format" in params else None
    if any(tool["name"] == JSON_TOOL for tool in tools) and json_tool:
        raise _refuse(f"tools: the name {JSON_TOOL!r} is reserved when response_format is set")
    single = params.get("parallel_tool_calls") is False

    def with_parallel(tool_choice: dict[str, Any]) -> dict[str, Any]:
        return {**tool_choice, "disable_parallel_tool_use": True} if single else tool_choice

    named: str | None = None
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or not isinstance(named, str):
            raise _refuse("tool_choice: expected auto, none, required or a named function")
    elif choice not in ("auto", "none", "required"):
        raise _refuse("tool_choice: expected auto, none, required or a named function")
    if not tools and (named or choice == "required"):
        raise _refuse("tool_choice: a required or named tool needs tools")
    if named is not None:
        return tools, with_parallel({"type": "tool", "name": named}), False
    if choice == "required":
        return tools, with_parallel({"type": "any"}), False
    if json_tool is not None:
        if tools and choice == "auto":  # the model may call a tool or answer in JSON
            return [*tools, json_tool], with_parallel({"type": "any"}), True
        return [*tools, json_tool], {"type": "tool", "name": JSON_TOOL}, True
    if not tools:
        return [], None, False
    if choice == "none":
        return tools, {"type": "none"}, False
    return tools, with_parallel({"type": "auto"}), False


# --- response ------------------------------------------------------------------------------


def usage_of(data: Any, prompt_tokens: int = 0, completion_tokens: int = 0) -> tuple[int, int]:
    """(prompt, completion) tokens; Anthropic counts cached prompt tokens separately."""
    if not isinstance(data, dict):
        return prompt_tokens, completion_tokens
    if data.get("input_tokens") is not None:
        prompt_tokens = sum(
            int(data.get(name) or 0)
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
    if data.get("output_tokens") is not None:
        completion_tokens = int(data["output_tokens"])
    return prompt_tokens, completion_tokens


def finish_reason(stop_reason: Any, *, tool_calls: bool) -> FinishReason:
    if stop_reason == "refusal":
        raise ContentFiltered("anthropic refused to continue (stop_reason: refusal)", provider=WIRE)
    if not isinstance(stop_reason, str):
        raise errors.malformed(WIRE, "stop_reason")
    reason = _STOP_REASONS.get(stop_reason, "stop")
    # In JSON mode the forced tool is how the model answers, not a call the client runs.
    return "stop" if reason == "tool_calls" and not tool_calls else reason


def completion(data: Any, *, json_mode: bool, model: str) -> ChatCompletion:
    try:
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise errors.malformed(WIRE, "message")
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in data["content"]:
            kind = block["type"]
            if kind == "text" and not json_mode:
                texts.append(str(block["text"]))
            elif kind == "tool_use" and json_mode and block["name"] == JSON_TOOL:
                texts.append(orjson.dumps(block["input"]).decode())
            elif kind == "tool_use":
                arguments = orjson.dumps(block["input"]).decode()
                calls.append(
                    {
                        "id": str(block["id"]),
                        "type": "function",
                        "function": {"name": str(block["name"]), "arguments": arguments},
                    }
                )
            # thinking, redacted_thinking and server-tool blocks have no OpenAI form.
        reason = finish_reason(data.get("stop_reason"), tool_calls=bool(calls))
        prompt, generated = usage_of(data.get("usage"))
        message_id = str(data.get("id") or "")
        answer_model = str(data.get("model") or model)
    except (KeyError, TypeError, ValueError, orjson.JSONEncodeError) as e:
        raise errors.malformed(WIRE, "message") from e
    result: ChatCompletion = {
        "id": message_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer_model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(texts) if texts or not calls else None,
                },
                "finish_reason": reason,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt, generated),
    }
    if calls:
        result["choices"][0]["message"]["tool_calls"] = calls
    return result


# --- stream --------------------------------------------------------------------------------

_BlockKind = Literal["text", "tool", "json", "other"]


@dataclass(slots=True)
class StreamTranslator:
    """Turns Anthropic stream events into OpenAI chunks, one event at a time."""

    model: str
    json_mode: bool
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = ""
    done: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop_reason: Any = None
    _blocks: dict[int, tuple[_BlockKind, int]] = field(default_factory=dict)
    _tool_calls: int = 0

    def chunk(self, delta: Delta, finish: FinishReason | None = None) -> ChatChunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def usage_chunk(self) -> ChatChunk:
        totals: Usage = usage(self.prompt_tokens, self.completion_tokens)
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": totals,
        }

    def feed(self, kind: str, data: dict[str, Any]) -> list[ChatChunk]:
        """The chunks for one event (``error`` events are the caller's to raise)."""
        try:
            return self._feed(kind, data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise errors.malformed(WIRE, f"{kind} event") from e

    def _feed(self, kind: str, data: dict[str, Any]) -> list[ChatChunk]:
        if kind == "message_start":
            message = data["message"]
            self.id = str(message["id"])
            self.model = str(message.get("model") or self.model)
            self.prompt_tokens, self.completion_tokens = usage_of(message.get("usage"))
            return [self.chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(int(data["index"]), data["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(int(data["index"]), data["delta"])
        if kind == "message_delta":
            self.stop_reason = data["delta"].get("stop_reason") or self.stop_reason
            self.prompt_tokens, self.completion_tokens = usage_of(
                data.get("usage"), self.prompt_tokens, self.completion_tokens
            )
            if self.stop_reason == "refusal":
                finish_reason(self.stop_reason, tool_calls=False)  # raises ContentFiltered
            return []
        if kind == "message_stop":
            self.done = True
            reason = finish_reason(self.stop_reason, tool_calls=self._tool_calls > 0)
            return [self.chunk({}, reason), self.usage_chunk()]
        # ping, content_block_stop, and event types added after this adapter was written.
        return []

    def _block_start(self, index: int, block: dict[str, Any]) -> list[ChatChunk]:
        kind = block["type"]
        if kind == "text":
            self._blocks[index] = ("other" if self.json_mode else "text", 0)
            text = str(block.get("text") or "")
            return [self.chunk({"content": text})] if text and not self.json_mode else []
        if kind == "tool_use" and self.json_mode and block["name"] == JSON_TOOL:
            self._blocks[index] = ("json", 0)
            return []
        if kind == "tool_use":
            position = self._tool_calls
            self._tool_calls += 1
            self._blocks[index] = ("tool", position)
            delta: Delta = {
                "tool_calls": [
                    {
                        "index": position,
                        "id": str(block["id"]),
                        "type": "function",
                        "function": {"name": str(block["name"]), "arguments": ""},
                    }
                ]
            }
            return [self.chunk(delta)]
        self._blocks[index] = ("other", 0)
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[ChatChunk]:
        kind, position = self._blocks.get(index, ("other", 0))
        if delta["type"] == "text_delta" and kind == "text":
            return [self.chunk({"content": str(delta["text"])})]
        if delta["type"] == "input_json_delta":
            piece = str(delta["partial_json"])
            if not piece:
                return []
            if kind == "json":
                return [self.chunk({"content": piece})]
            if kind == "tool":
                return [
                    self.chunk(
                        {"tool_calls": [{"index": position, "function": {"arguments": piece}}]}
                    )
                ]
        return []  # thinking and signature deltas have no OpenAI form
