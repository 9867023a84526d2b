"""Text -> chunks of at most ``size`` tokens with ``overlap`` tokens repeated, counted
with the embedding model's own tokenizer.

A chunk ends, in order of preference, at a paragraph break, a sentence end, a line
break, or a space, as long as that keeps it at least half full; only a run of text with
none of these (a long URL, a table of digits) is cut mid-word. The overlap starts at a
word boundary too. Chunks never span two sections (pages, headings), and each keeps its
page or heading path and its character offsets in the document's full text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from polymodal.rag.parsers import SEPARATOR, Section
from polymodal.rag.tokenizers import Tokenizer

# A sentence ends at . ! ? (and their CJK/Devanagari/Arabic forms) followed by space or
# a closing quote; CJK full stops need no space after them.
_SENTENCE_END = re.compile(r"(?:[.!?;]['\")\]]*\s)|[\u3002\uff01\uff1f\uff1b\u0964\u06d4\u061f]")


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_no: int
    text: str
    tokens: int
    char_start: int  # offsets into the document's full text (sections joined by "\n\n")
    char_end: int
    page: int | None
    section: str | None


def _boundary_ranks(text: str) -> dict[int, int]:
    """Character position -> how good a place to end a chunk (3 best)."""
    ranks: dict[int, int] = {}
    for m in re.finditer(r"\s+", text):
        ws = m.group()
        rank = 3 if "\n\n" in ws else 2 if "\n" in ws else 1
        ranks[m.start()] = max(ranks.get(m.start(), 0), rank)
    for m in _SENTENCE_END.finditer(text):
        end = m.end() if not m.group()[-1].isspace() else m.end() - 1
        ranks[end] = max(ranks.get(end, 0), 2)
    return ranks


def _split_section(
    text: str, spans: Sequence[tuple[int, int]], size: int, overlap: int
) -> list[tuple[int, int, int]]:
    """(token_start, token_end, char_end) windows over one section's tokens."""
    ranks = _boundary_ranks(text)
    # Rank of ending after token i: the boundary at (or just after) the token's end.
    end_rank = [ranks.get(e, 0) for _s, e in spans]
    # Tokens that start a word (after whitespace or at the start): good overlap starts.
    # (e5 tokens carry their leading space; BPE tokens often do too.)
    word_start = [
        i == 0
        or spans[i][0] > spans[i - 1][1]
        or text[spans[i][0] : spans[i][0] + 1].isspace()
        or text[spans[i][0] - 1 : spans[i][0]].isspace()
        for i in range(len(spans))
    ]
    windows: list[tuple[int, int, int]] = []
    n = len(spans)
    start = 0
    while start < n:
        end = min(start + size, n)
        if end < n:
            half = start + max(size // 2, 1)
            best = -1
            for rank in (3, 2, 1):
                for i in range(end - 1, half - 1, -1):
                    if end_rank[i] >= rank:
                        best = i + 1
                        break
                if best > 0:
                    break
            if best > 0:
                end = best
        windows.append((start, end, spans[end - 1][1]))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        # Move the overlap's start forward to a word start (never past the chunk end).
        while nxt < end and not word_start[nxt]:
            nxt += 1
        start = nxt if nxt < end else end
    return windows


def chunk_sections(
    sections: Sequence[Section], tokenizer: Tokenizer, *, size: int, overlap: int
) -> list[Chunk]:
    if size < 1:
        raise ValueError("chunk size must be at least one token")
    overlap = min(overlap, size // 2)
    chunks: list[Chunk] = []
    base = 0
    for section in sections:
        text = section.text
        spans = tokenizer.spans(text)
        for t0, t1, c1 in _split_section(text, spans, size, overlap):
            c0 = spans[t0][0]
            body = text[c0:c1]
            lead = len(body) - len(body.lstrip())
            body = body.strip()
            if body:
                chunks.append(
                    Chunk(
                        chunk_no=len(chunks),
                        text=body,
                        tokens=t1 - t0,
                        char_start=base + c0 + lead,
                        char_end=base + c0 + lead + len(body),
                        page=section.page,
                        section=section.section,
                    )
                )
        base += len(text) + len(SEPARATOR)
    return chunks
