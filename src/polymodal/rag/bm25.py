"""BM25 as Qdrant sparse vectors: the term-frequency half computed here, the IDF half
by Qdrant (``modifier=IDF`` on the sparse vector), so nothing global is kept by us.

The tokenizer is multilingual and needs no model: Unicode NFKC + casefold, words of
letters and digits; scripts written without spaces (Chinese, Japanese, Thai, Lao,
Khmer, Myanmar) become overlapping character bigrams, the usual BM25 treatment of CJK.
Terms map to 32-bit ids by a stable hash (collisions are rare and only add noise).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)
# Scripts without spaces between words.
_NO_SPACE = re.compile(
    "[\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff"  # Thai, Lao, Myanmar, Khmer
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+"  # kana, CJK, Hangul
)
# Tokens too common to help (English-only and tiny; other languages rely on IDF).
_STOP_WORDS = (
    "a an and are as at be by for from has have in is it its of on or that the this to "
    "was were which with"
)
_STOP = frozenset(_STOP_WORDS.split())


def terms(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    out: list[str] = []
    for word in _WORD.findall(text):
        if _NO_SPACE.search(word) is None:
            if word not in _STOP:
                out.append(word)
            continue
        pos = 0
        for m in _NO_SPACE.finditer(word):
            if m.start() > pos:
                out.append(word[pos : m.start()])
            run = m.group()
            if len(run) == 1:
                out.append(run)
            else:
                out.extend(run[i : i + 2] for i in range(len(run) - 1))
            pos = m.end()
        if pos < len(word):
            out.append(word[pos:])
    return out


def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True, slots=True)
class Bm25:
    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0

    def document(self, text: str) -> SparseVector:
        words = terms(text)
        counts = Counter(term_id(t) for t in words)
        norm = self.k1 * (1 - self.b + self.b * len(words) / self.avg_len)
        indices = sorted(counts)
        values = [counts[i] * (self.k1 + 1) / (counts[i] + norm) for i in indices]
        return SparseVector(indices, values)

    def query(self, text: str) -> SparseVector:
        indices = sorted({term_id(t) for t in terms(text)})
        return SparseVector(indices, [1.0] * len(indices))
