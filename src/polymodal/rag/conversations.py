"""A conversation's memory: the last few messages verbatim (the history window) and a
running summary of everything older, made by a cheap-tier call once the unsummarised
history passes a token limit. The prompt then carries summary + window, so a long
conversation costs about the same per turn as a short one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from polymodal.domain.chat import ChatRequest, Message
from polymodal.rag.answer import ChatbotCaller

SUMMARY_MAX_TOKENS = 400  # length cap of one summary (it replaces many messages)


@dataclass(frozen=True, slots=True)
class Turn:
    id: int
    role: str
    content: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Memory:
    """What the next prompt gets: the summary, and the messages after it to show."""

    summary: str
    window: list[Turn]
    fold: list[Turn]  # messages to fold into the summary first (empty: under the limit)


def plan(turns: Sequence[Turn], summary: str, *, window: int, trigger_tokens: int) -> Memory:
    """``turns``: the messages after the last summary, oldest first. Under
    ``trigger_tokens`` they are all shown; past it everything but the last ``window``
    messages is folded into the summary."""
    if sum(t.tokens for t in turns) <= trigger_tokens or len(turns) <= window:
        return Memory(summary=summary, window=list(turns), fold=[])
    keep = len(turns) - window
    return Memory(summary=summary, window=list(turns[keep:]), fold=list(turns[:keep]))


def as_messages(turns: Sequence[Turn]) -> list[Message]:
    out: list[Message] = []
    for t in turns:
        role: Literal["user", "assistant"] = "assistant" if t.role == "assistant" else "user"
        out.append({"role": role, "content": t.content})
    return out


def summary_request(
    previous: str, fold: Sequence[Turn], *, tier: str, language: str
) -> ChatRequest:
    transcript = "\n".join(f"{t.role}: {t.content}" for t in fold)
    earlier = f"Summary so far:\n{previous}\n\n" if previous else ""
    return ChatRequest(
        model=f"tier:{tier}",
        messages=[
            {
                "role": "system",
                "content": "Summarise the conversation below for the assistant's own memory: "
                "the user's questions, the facts given in answers, names, numbers and open "
                f"points. At most 150 words, in the conversation's language ({language}). "
                "Write only the summary.",
            },
            {"role": "user", "content": f"{earlier}New messages:\n{transcript}"},
        ],
        stream=False,
        params={"max_tokens": SUMMARY_MAX_TOKENS, "temperature": 0},
    )


async def summarise(
    caller: ChatbotCaller[Any],
    feature: str,
    previous: str,
    fold: Sequence[Turn],
    *,
    tier: str,
    language: str,
) -> str:
    completion, _ = await caller.chat(
        feature, summary_request(previous, fold, tier=tier, language=language)
    )
    choices = completion["choices"]
    text = (choices[0]["message"].get("content") or "") if choices else ""
    # An empty summary would silently drop the folded messages: keep them verbatim then.
    return text.strip() or "\n".join(f"{t.role}: {t.content}" for t in fold)
