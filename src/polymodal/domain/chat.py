"""The canonical chat and embedding formats: OpenAI's Chat Completions schema.

These are TypedDicts: at run time they are plain dicts (what JSON parsing yields and what
the OpenAI wire format forwards unchanged), while mypy and pydantic (at the API edge) see
the full shape. Adapters for other wire formats translate to and from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired

# pydantic validates these at the API edge and needs typing_extensions.TypedDict on 3.11.
from typing_extensions import TypedDict

# --- request -------------------------------------------------------------------------------


class ImageURL(TypedDict):
    url: str
    detail: NotRequired[Literal["auto", "low", "high"]]


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class ImagePart(TypedDict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(TypedDict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: NotRequired[str | list[ContentPart] | None]
    name: NotRequired[str]
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]


class FunctionSpec(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]
    strict: NotRequired[bool]


class Tool(TypedDict):
    type: Literal["function"]
    function: FunctionSpec


class JsonSchemaFormat(TypedDict):
    name: str
    schema: NotRequired[dict[str, Any]]
    description: NotRequired[str]
    strict: NotRequired[bool]


class ResponseFormat(TypedDict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: NotRequired[JsonSchemaFormat]


# Sampling and output parameters every adapter understands (others are refused or passed
# through only by the OpenAI wire format).
COMMON_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "user",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
)


@dataclass(slots=True)
class ChatRequest:
    """One chat call, after the API edge validated it.

    ``params`` holds the OpenAI parameters the caller set (temperature, tools, ...), only
    those, so adapters can tell "unset" from "default".
    """

    model: str
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False  # the caller asked for stream_options.include_usage
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def max_output_tokens(self) -> int | None:
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return int(value) if value is not None else None


# --- response ------------------------------------------------------------------------------


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(TypedDict):
    role: Literal["assistant"]
    content: str | None
    tool_calls: NotRequired[list[ToolCall]]
    refusal: NotRequired[str | None]


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class Choice(TypedDict):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: NotRequired[Any]


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: NotRequired[Usage]
    system_fingerprint: NotRequired[str | None]


class ToolCallDelta(TypedDict):
    index: int
    id: NotRequired[str]
    type: NotRequired[Literal["function"]]
    function: NotRequired[dict[str, str]]  # {"name"?: str, "arguments"?: str}


class Delta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallDelta]
    refusal: str | None


class ChunkChoice(TypedDict):
    index: int
    delta: Delta
    finish_reason: FinishReason | None
    logprobs: NotRequired[Any]


class ChatChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage | None]
    system_fingerprint: NotRequired[str | None]


# --- embeddings ----------------------------------------------------------------------------


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str]
    dimensions: int | None = None
    # What the text is for; e5 and Cohere embed queries and documents differently.
    input_type: Literal["query", "document"] = "document"
    encoding_format: Literal["float", "base64"] = "float"


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    model: str
    prompt_tokens: int


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
