"""Turning a retrieval into a grounded prompt and the model's answer into citations.

Sources are numbered [1], [2], ... in the prompt; the model is told to cite them by
number and to answer only from them. Each number maps back to the document's title,
page and chunk in the response. When no hit reaches the chatbot's relevance threshold
the answer is the localized "not in the knowledge base" text, given without a model
call: a model shown no sources tends to answer from its own memory, which is exactly
what a knowledge-base chatbot must not do, and the honest answer then costs nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from polymodal.domain.chat import ChatChunk, ChatCompletion, ChatRequest, Message
from polymodal.domain.rag import Hit

R_co = TypeVar("R_co", covariant=True)

LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "pl", "ja", "zh", "ar")
CitationStyle = Literal["numeric", "footnotes", "none"]
CITATION_STYLES: tuple[str, ...] = ("numeric", "footnotes", "none")
SOURCE_CHARS = 2000  # longest excerpt of one chunk put in the prompt

NOT_IN_KB: dict[str, str] = {
    "en": "I could not find this in the knowledge base, so I cannot answer it.",
    "es": "No he encontrado esto en la base de conocimientos, así que no puedo responderlo.",
    "fr": "Je n'ai pas trouvé cela dans la base de connaissances ; je ne peux donc pas y répondre.",
    "de": "Dazu habe ich in der Wissensdatenbank nichts gefunden, daher kann ich die Frage "
    "nicht beantworten.",
    "it": "Non ho trovato questa informazione nella base di conoscenza, quindi non posso "
    "rispondere.",
    "pt": "Não encontrei isto na base de conhecimento, por isso não posso responder.",
    "nl": "Ik heb dit niet in de kennisbank gevonden, dus ik kan het niet beantwoorden.",
    "pl": "Nie znalazłem tego w bazie wiedzy, więc nie mogę odpowiedzieć.",
    "ja": "ナレッジベースに該当する情報が見つからなかったため、お答えできません。",
    "zh": "我在知识库中没有找到相关内容，因此无法回答。",  # noqa: RUF001
    "ar": "لم أجد هذا في قاعدة المعرفة، لذلك لا أستطيع الإجابة عنه.",
}
_LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ja": "Japanese", "zh": "Chinese",
    "ar": "Arabic",
}  # fmt: skip
_CITE = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


@functools.cache
def _identifier() -> Any:
    # Loaded once on first use (~1 s); the app warms it up at start.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    return identifier


def warm_up() -> None:
    _identifier()


class ChatbotCaller(Protocol[R_co]):
    """The gateway as a chatbot sees it (the API layer binds the principal and request
    id). ``R_co``: how a call was routed. Every call carries ``feature``."""

    async def chat(self, feature: str, request: ChatRequest) -> tuple[ChatCompletion, R_co]: ...

    async def chat_stream(
        self, feature: str, request: ChatRequest
    ) -> tuple[AsyncIterator[ChatChunk], R_co]: ...

    async def embed_query(self, text: str, *, feature: str) -> list[float]: ...


def answer_language(configured: str, text: str) -> str:
    """The chatbot's language, or (``auto``) the language the user wrote in."""
    if configured != "auto":
        return configured
    if len(text.strip()) < 3:
        return "en"
    lang, _ = _identifier().classify(text[:500])
    return str(lang) if lang in NOT_IN_KB else "en"


def not_in_kb(language: str) -> str:
    return NOT_IN_KB.get(language, NOT_IN_KB["en"])


def relevance(hit: Hit) -> float:
    """The dense cosine when the hit matched densely (comparable across queries), else
    the fused score."""
    return hit.dense_score if hit.dense_score is not None else hit.score


def relevant(hits: Sequence[Hit], threshold: float) -> list[Hit]:
    return [h for h in hits if relevance(h) >= threshold]


@dataclass(frozen=True, slots=True)
class Source:
    """A numbered source as shown to the model and returned to the client."""

    n: int
    hit: Hit

    def label(self) -> str:
        parts = [self.hit.title or "untitled"]
        if self.hit.page is not None:
            parts.append(f"page {self.hit.page}")
        if self.hit.section:
            parts.append(self.hit.section)
        return ", ".join(parts)

    def public(self, *, cited: bool) -> dict[str, Any]:
        h = self.hit
        return {
            "n": self.n,
            "cited": cited,
            "kb_id": str(h.kb_id),
            "doc_id": str(h.doc_id),
            "title": h.title,
            "page": h.page,
            "section": h.section,
            "chunk": h.chunk_no,
            "char_start": h.char_start,
            "char_end": h.char_end,
            "score": round(relevance(h), 4),
            "snippet": h.text[:300],
        }


def number(hits: Sequence[Hit]) -> list[Source]:
    return [Source(n=i + 1, hit=h) for i, h in enumerate(hits)]


def system_message(
    *,
    persona: str,
    sources: Sequence[Source],
    language: str,
    style: str,
    summary: str,
) -> Message:
    lang_name = _LANGUAGE_NAMES.get(language, language)
    rules = [
        "Answer the user's question using only the numbered sources below.",
        f'If the sources do not contain the answer, reply exactly: "{not_in_kb(language)}"',
        f"Answer in {lang_name}.",
    ]
    if style != "none":
        rules.append(
            "After each statement, cite the source(s) it comes from by number in square "
            "brackets, like [1] or [2][3]. Cite only numbers listed below."
        )
    else:
        rules.append("Do not add citation markers.")
    blocks = [persona.strip()] if persona.strip() else []
    blocks.append("\n".join(f"- {r}" for r in rules))
    if summary:
        blocks.append(f"Summary of the earlier conversation:\n{summary}")
    shown = [f"[{s.n}] {s.label()}\n{s.hit.text[:SOURCE_CHARS]}" for s in sources]
    blocks.append("Sources:\n\n" + "\n\n".join(shown))
    return {"role": "system", "content": "\n\n".join(blocks)}


def cited_numbers(answer: str, count: int) -> list[int]:
    """Source numbers the answer cites, in order of first use, ignoring any the prompt
    did not offer."""
    seen: list[int] = []
    for m in _CITE.finditer(answer):
        for part in m.group(1).split(","):
            n = int(part)
            if 1 <= n <= count and n not in seen:
                seen.append(n)
    return seen


def citations(answer: str, sources: Sequence[Source]) -> list[dict[str, Any]]:
    """Every source shown to the model, cited ones first (in order of first citation)."""
    cited = cited_numbers(answer, len(sources))
    by_n = {s.n: s for s in sources}
    first = [by_n[n].public(cited=True) for n in cited]
    rest = [s.public(cited=False) for s in sources if s.n not in cited]
    return first + rest


def footnotes(answer: str, sources: Sequence[Source]) -> str:
    """``footnotes`` style: the cited sources listed under the answer."""
    cited = cited_numbers(answer, len(sources))
    if not cited:
        return ""
    by_n = {s.n: s for s in sources}
    lines = [f"[{n}] {by_n[n].label()}" for n in cited]
    return "\n\n" + "\n".join(lines)
