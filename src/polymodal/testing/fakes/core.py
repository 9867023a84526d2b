"""Wire-neutral state of the fake providers.

Faults, scripted replies, request recording, and the deterministic completions
(one token per word) and embeddings (unit vectors from a hash of the text).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import itertools
import math
import re
import struct
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson
from starlette.requests import Request

Wire = Literal["openai", "anthropic", "gemini", "cohere"]
WIRES: tuple[Wire, ...] = ("openai", "anthropic", "gemini", "cohere")
Finish = Literal["stop", "length", "safety", "blocked"]

# Header names never recorded (credentials).
_SECRET_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key", b"cookie"})
_PIECE_RE = re.compile(r"\s*\S+")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def count_words(text: str) -> int:
    """The fakes' tokenizer: one token per whitespace-separated word."""
    return len(text.split())


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviour applied to the provider API requests of one fake server.

    A "chunk" is one SSE event as written on the wire (an Anthropic ``ping`` and
    the OpenAI ``data: [DONE]`` line each count as one), or one element of a
    Gemini JSON-array stream.
    """

    status: int | None = None
    """Answer with this HTTP status and the provider's real error body."""
    error_type: str | None = None
    """Override the error type (OpenAI ``type``, Anthropic ``error.type``, Gemini ``status``)."""
    error_message: str | None = None
    """Override the error message."""
    retry_after: float | None = None
    """Seconds for the ``Retry-After`` header on error responses (429 defaults to 1)."""
    latency_ms: float = 0
    """Added before any response (including error responses)."""
    hang: bool = False
    """Never answer; the request is held until the client goes away or the server stops."""
    first_byte_delay_ms: float = 0
    """Stream: headers are sent at once, the first chunk after this delay."""
    chunk_delay_ms: float = 0
    """Stream: delay between consecutive chunks."""
    stall_after_chunks: int | None = None
    """Stream: send N chunks, then nothing more while keeping the connection open."""
    truncate_after_chunks: int | None = None
    """Stream: send N chunks, then end without the stream terminator (see ``truncate_mode``)."""
    truncate_mode: Literal["abort", "clean"] = "abort"
    """``abort``: drop the TCP connection mid-body (incomplete chunked read);
    ``clean``: end the HTTP body properly, only the provider terminator is missing."""
    error_after_chunks: int | None = None
    """Stream: send N chunks, then the provider's in-stream error event, then end."""
    malformed: Literal["json", "chunk"] | None = None
    """``json``: a 200 non-stream body that is not valid JSON; ``chunk``: one bad SSE
    data line (truncated JSON) mid-stream, after which the stream goes on normally."""
    malformed_after_chunks: int = 1
    """Stream: how many good chunks precede the bad one."""
    times: int | None = None
    """Apply to the next N matching requests only, then behave (``None``: forever)."""
    match_path: str | None = None
    """Only requests whose path contains this substring."""
    match_model: str | None = None
    """Only requests for this model (body ``model``, or the Gemini path model)."""

    _NAMES: ClassVar[frozenset[str]]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        unknown = set(data) - cls._NAMES
        if unknown:
            raise ValueError(
                f"unknown fault(s) {sorted(unknown)}; valid names: {sorted(cls._NAMES)}"
            )
        faults = cls(**data)
        faults.validate()
        return faults

    def validate(self) -> None:
        def _int(name: str, value: object, *, allow_none: bool = True) -> None:
            if value is None and allow_none:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")

        def _num(name: str, value: object, *, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")

        if self.status is not None and (
            not isinstance(self.status, int) or not 400 <= self.status <= 599
        ):
            raise ValueError("status must be an integer HTTP error code (400-599)")
        for name in ("stall_after_chunks", "truncate_after_chunks", "error_after_chunks", "times"):
            _int(name, getattr(self, name))
        _int("malformed_after_chunks", self.malformed_after_chunks, allow_none=False)
        for name in ("latency_ms", "first_byte_delay_ms", "chunk_delay_ms"):
            _num(name, getattr(self, name))
        _num("retry_after", self.retry_after, allow_none=True)
        if self.malformed not in (None, "json", "chunk"):
            raise ValueError("malformed must be 'json', 'chunk' or null")
        if self.truncate_mode not in ("abort", "clean"):
            raise ValueError("truncate_mode must be 'abort' or 'clean'")
        if not isinstance(self.hang, bool):
            raise ValueError("hang must be a boolean")
        for name in ("error_type", "error_message", "match_path", "match_model"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string")

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        }

    @property
    def active(self) -> bool:
        return bool(self.to_dict().keys() - {"times", "match_path", "match_model"})


Faults._NAMES = frozenset(f.name for f in dataclasses.fields(Faults))


class _FaultSlot:
    """Faults plus their remaining count; replaced as a whole so updates are atomic."""

    __slots__ = ("active", "faults", "remaining")

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.active = faults.active
        self.remaining = faults.times


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call a scripted reply asks the model to make."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    @classmethod
    def from_obj(cls, obj: ToolCall | Mapping[str, Any]) -> ToolCall:
        if isinstance(obj, ToolCall):
            return obj
        if not isinstance(obj, Mapping):
            raise ValueError("a tool call must be an object")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a tool call needs a 'name'")
        args = obj.get("arguments", {})
        if not isinstance(args, Mapping):
            raise ValueError("tool call 'arguments' must be an object")
        call_id = obj.get("id")
        return cls(
            name=name, arguments=dict(args), id=call_id if isinstance(call_id, str) else None
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted model reply.

    ``text=None`` means the default echo text (or no text when tool calls are made).
    ``tool_calls`` are only returned when the request offered tools.
    ``finish``: ``stop`` (natural end), ``length`` (max tokens), ``safety`` (OpenAI
    ``content_filter``, Anthropic ``refusal``, Gemini candidate ``SAFETY``), or
    ``blocked`` (Gemini ``promptFeedback.blockReason``; elsewhere same as ``safety``).
    """

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish: Finish = "stop"

    @classmethod
    def from_obj(cls, obj: Reply | str | Mapping[str, Any]) -> Reply:
        if isinstance(obj, Reply):
            return obj
        if isinstance(obj, str):
            return cls(text=obj)
        if not isinstance(obj, Mapping):
            raise ValueError("a reply must be a string or an object")
        unknown = set(obj) - {"text", "tool_calls", "finish"}
        if unknown:
            raise ValueError(f"unknown reply field(s) {sorted(unknown)}")
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            raise ValueError("reply 'text' must be a string")
        finish = obj.get("finish", "stop")
        if finish not in ("stop", "length", "safety", "blocked"):
            raise ValueError("reply 'finish' must be stop, length, safety or blocked")
        calls = tuple(ToolCall.from_obj(c) for c in obj.get("tool_calls") or ())
        return cls(text=text, tool_calls=calls, finish=finish)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tool_calls": [
                {"name": c.name, "arguments": dict(c.arguments), "id": c.id}
                for c in self.tool_calls
            ],
            "finish": self.finish,
        }


@dataclass(slots=True)
class Completion:
    """What the fake model "generated" for one request, before wire encoding."""

    pieces: list[str]
    """The reply text split in stream pieces (one word each, with its leading space)."""
    tool_calls: list[ToolCall]
    finish: Literal["stop", "length", "tool_calls", "safety", "blocked"]
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def tool_arguments_json(call: ToolCall) -> str:
    return dumps(dict(call.arguments)).decode()


# --------------------------------------------------------------------------- embeddings

_EMBED_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
    "embed-english-v2.0": 4096,
    "embed-v4.0": 1536,
    "text-embedding-004": 768,
    "embedding-001": 768,
    "gemini-embedding-001": 3072,
}
DEFAULT_EMBED_DIM = 8


@functools.lru_cache(maxsize=8192)
def embed_vector(text: str, dim: int) -> tuple[float, ...]:
    """A deterministic unit vector for ``text``, as float32 values.

    The raw components come from SHAKE-256 of the text, so the vector for a
    smaller ``dim`` is the renormalized prefix of a larger one (like OpenAI's
    ``dimensions``).
    """
    raw = struct.unpack(f"<{dim}I", hashlib.shake_256(text.encode()).digest(4 * dim))
    vals = [i / 2147483647.5 - 1.0 for i in raw]
    norm = math.sqrt(math.fsum(v * v for v in vals)) or 1.0
    f32 = struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *(v / norm for v in vals)))
    # 9 significant digits round-trip binary32 exactly and keep the JSON short.
    return tuple(float(f"{v:.9g}") for v in f32)


def embed_base64(vec: Sequence[float]) -> str:
    """OpenAI ``encoding_format=base64``: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


# --------------------------------------------------------------------------- state


class FakeState:
    """Run-time state of one fake server; safe to drive from another thread."""

    def __init__(
        self,
        wire: Wire,
        api_key: str | None,
        *,
        models: Sequence[str],
        embedding_dim: int | None = None,
        record_limit: int = 1000,
    ) -> None:
        self.wire = wire
        self.api_key = api_key
        self.models = list(models)
        self.embedding_dim = embedding_dim
        self.closing = asyncio.Event()
        self._slot = _FaultSlot(Faults())
        self._replies: deque[Reply] = deque()
        self.default_reply: Reply | None = None
        self._record_limit = record_limit
        self._requests: deque[dict[str, Any]] = deque(maxlen=max(record_limit, 1))
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # faults ---------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._slot.faults

    @property
    def faults_remaining(self) -> int | None:
        return self._slot.remaining

    def set_faults(self, faults: Faults) -> None:
        self._slot = _FaultSlot(faults)

    def take_faults(self, path: str, model: object) -> Faults | None:
        """The faults to apply to this request, consuming one of ``times``."""
        slot = self._slot
        if not slot.active:
            return None
        f = slot.faults
        if f.match_path is not None and f.match_path not in path:
            return None
        if f.match_model is not None and model != f.match_model:
            return None
        if slot.remaining is not None:
            if slot.remaining <= 0:
                return None
            slot.remaining -= 1
        return f

    # replies --------------------------------------------------------------

    def push_replies(self, replies: Iterable[Reply]) -> None:
        with self._lock:
            self._replies.extend(replies)

    def clear_replies(self) -> None:
        with self._lock:
            self._replies.clear()

    def pending_replies(self) -> list[Reply]:
        with self._lock:
            return list(self._replies)

    def _next_reply(self) -> Reply | None:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        return self.default_reply

    def complete(
        self,
        *,
        prompt_tokens: int,
        last_user_text: str,
        has_tools: bool,
        max_tokens: int | None,
    ) -> Completion:
        reply = self._next_reply()
        calls = list(reply.tool_calls) if reply is not None and has_tools else []
        if reply is not None and reply.text is not None:
            text = reply.text
        elif calls:
            text = ""
        else:
            text = "echo: " + last_user_text
        pieces = _PIECE_RE.findall(text)
        finish: Literal["stop", "length", "tool_calls", "safety", "blocked"]
        finish = reply.finish if reply is not None else "stop"
        if finish == "stop" and calls:
            finish = "tool_calls"
        if max_tokens is not None and max_tokens >= 0 and len(pieces) > max_tokens:
            pieces = pieces[:max_tokens]
            finish = "length"
            calls = []
        completion_tokens = len(pieces) + sum(
            1 + count_words(tool_arguments_json(c)) for c in calls
        )
        return Completion(pieces, calls, finish, prompt_tokens, completion_tokens)

    # ids ------------------------------------------------------------------

    def new_id(self, width: int = 24) -> str:
        """A deterministic, per-server increasing hex id."""
        return format(next(self._ids), f"0{width}x")

    # embeddings -----------------------------------------------------------

    def embed_dim(self, model: str, requested: object = None) -> int:
        if isinstance(requested, int) and not isinstance(requested, bool) and requested > 0:
            return requested
        if self.embedding_dim is not None:
            return self.embedding_dim
        return _EMBED_DIMS.get(model.removeprefix("models/"), DEFAULT_EMBED_DIM)

    # recording ------------------------------------------------------------

    def record(self, request: Request, body: Any) -> None:
        if self._record_limit <= 0:
            return
        scope = request.scope
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k not in _SECRET_HEADERS
        }
        query = {k: v for k, v in request.query_params.multi_items() if k != "key"}
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "query": query,
            "headers": headers,
            "body": body,
        }
        with self._lock:
            self._requests.append(entry)

    def recorded(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def clear_recorded(self) -> None:
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        self.set_faults(Faults())
        self.default_reply = None
        self.clear_replies()
        self.clear_recorded()
