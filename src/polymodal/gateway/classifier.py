"""Request classifier: tier, task and language from cheap features, in well under a
millisecond, before any model is called.

Rules read features that cost microseconds: length, code fences, math notation, cue
phrases in the 11 product languages (cues.yaml), requested output length, tools, images,
conversation depth. A learned model can refine the decision (see `LearnedScorer`); the
rules alone are the default and need nothing but this file and cues.yaml.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import ahocorasick
import yaml

from polymodal.domain.chat import ChatRequest, Message

CUE_WINDOW = 2000  # characters read at each end of a long message
LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "pl", "ja", "zh", "ar")
TASK_ORDER = (
    "translation",
    "summarization",
    "extraction",
    "classification",
    "code",
    "math",
    "creative",
    "reasoning",
)
_CODE_FENCE = re.compile(r"```|^\s{4}\S", re.MULTILINE)
_CODE_SYNTAX = re.compile(
    r"(\bdef |\bclass |\bimport |\bfunction\b|=>|\breturn\b|#include|\bSELECT\b|\bconst |"
    r"\bpublic static\b|;\s*$|\{\s*$)",
    re.MULTILINE,
)
_MATH = re.compile(r"(\d+\s*[-+*/^=]\s*\d+|\\frac|\\int|\\sum|∫|√|∑|\$[^$]+\$|\bx\^2\b)")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: str
    task: str
    language: str
    est_input_tokens: int
    est_output_tokens: int
    confidence: float
    reasons: tuple[str, ...] = field(default_factory=tuple)


@cache
def _automaton() -> Any:
    """All cues of cues.yaml in one Aho-Corasick automaton: one pass over the text finds
    every cue of every key, whatever the number of cues (matching is language-agnostic,
    so a German request with an English keyword still counts)."""
    text = resources.files("polymodal.gateway").joinpath("cues.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    automaton = ahocorasick.Automaton()
    keys: dict[str, set[str]] = {}
    for group in ("tasks", "signals"):
        for key, by_language in (data.get(group) or {}).items():
            for cues in by_language.values():
                for cue in cues:
                    keys.setdefault(cue.lower(), set()).add(key)
    for cue, owners in keys.items():
        automaton.add_word(cue, (cue, tuple(sorted(owners))))
    automaton.make_automaton()
    return automaton


def cue_hits(text: str) -> dict[str, int]:
    """How many distinct cues of each key occur in ``text`` (already normalised)."""
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for _, (cue, owners) in _automaton().iter(text):
        if cue in seen:
            continue
        seen.add(cue)
        for key in owners:
            counts[key] = counts.get(key, 0) + 1
    return counts


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return " ".join(p["text"] for p in content if p["type"] == "text")


def _has_image(messages: list[Message]) -> bool:
    for m in messages:
        content = m.get("content")
        if isinstance(content, list) and any(p["type"] == "image_url" for p in content):
            return True
    return False


class Classifier:
    def __init__(
        self,
        *,
        count_tokens: Callable[[str], int],
        detect_language: Callable[[str], str] | None = None,
        complex_threshold: float = 3.0,
        critical_threshold: float = 7.0,
    ) -> None:
        self._count = count_tokens
        self._detect = detect_language or detect_language_langid
        self._complex = complex_threshold
        self._critical = critical_threshold

    def classify(self, request: ChatRequest) -> RouteDecision:
        messages = request.messages
        users = [m for m in messages if m["role"] == "user"]
        last = _text(users[-1]) if users else ""
        # The instruction is at the start or the end of a long message; a pasted document
        # in the middle would only add noise (and time).
        if len(last) > 2 * CUE_WINDOW:
            last = last[:CUE_WINDOW] + "\n" + last[-CUE_WINDOW:]
        hits = cue_hits(_normalize(last))
        reasons: list[str] = []

        input_tokens = sum(self._count(_text(m)) for m in messages)
        requested = request.max_output_tokens

        # --- task: the first task whose cues appear, by a fixed precedence -----------
        task, task_hits = "chat", 0
        for candidate in TASK_ORDER:
            count = hits.get(candidate, 0)
            if candidate == "code" and (_CODE_FENCE.search(last) or _CODE_SYNTAX.search(last)):
                count += 2
            if candidate == "math" and _MATH.search(last):
                count += 2
            if count > task_hits:
                task, task_hits = candidate, count
        if request.params.get("tools") and task == "chat":
            task = "extraction" if request.params.get("tool_choice") not in (None, "auto") else task
        fmt = (request.params.get("response_format") or {}).get("type")
        if fmt in ("json_object", "json_schema") and task == "chat":
            task = "extraction"
        reasons.append(f"task={task}" + (f" ({task_hits} cues)" if task_hits else " (default)"))

        # --- tier: a score over difficulty signals ----------------------------------------
        score = 0.0
        multi = hits.get("multi_step", 0)
        constraints = hits.get("constraints", 0)
        long_out = hits.get("long_output", 0)
        stakes = hits.get("high_stakes", 0)
        brief = hits.get("brief", 0)
        if multi:
            score += 1.5 * min(multi, 3)
            reasons.append(f"multi-step cues x{multi}")
        if constraints >= 2:
            score += 1.0
            reasons.append(f"constraints x{constraints}")
        if long_out or (requested and requested >= 1500):
            score += 1.5
            reasons.append("long output requested")
        if task in ("code", "math", "reasoning"):
            score += 2.0
            reasons.append(f"{task} task")
        if task == "code" and (len(last) > 400 or "```" in last):
            score += 1.0
        if input_tokens > 1500:
            score += 1.5
            reasons.append(f"long input ({input_tokens} tokens)")
        elif input_tokens > 400:
            score += 0.75
        turns = sum(1 for m in messages if m["role"] in ("user", "assistant"))
        if turns > 8:
            score += 1.0
            reasons.append(f"deep conversation ({turns} turns)")
        if request.params.get("tools"):
            score += 1.0
            reasons.append("tools")
        if _has_image(messages):
            score += 1.0
            reasons.append("image input")
        if stakes:
            score += 2.5 * min(stakes, 2)
            reasons.append(f"high-stakes cues x{stakes}")
        if brief and score < self._critical:
            score -= 1.5
            reasons.append("brief answer asked")
        if task in ("translation", "classification") and input_tokens < 400 and not stakes:
            score -= 1.0

        if score >= self._critical and stakes:
            tier = "critical"
        elif score >= self._complex:
            tier = "complex"
        else:
            tier = "simple"
        margin = min(abs(score - self._complex), abs(score - self._critical))
        confidence = round(min(0.5 + margin / 4, 0.99), 2)

        est_output = requested or (1200 if long_out else 300 if tier != "simple" else 150)
        language = self._detect(last) if last.strip() else "other"
        return RouteDecision(
            tier=tier,
            task=task,
            language=language,
            est_input_tokens=input_tokens,
            est_output_tokens=est_output,
            confidence=confidence,
            reasons=(f"score={score:.1f}", *reasons),
        )


def detect_language_langid(text: str) -> str:
    """One of the 11 product languages, or "other" (py3langid; offline, ~0.2 ms)."""
    import py3langid

    code, _ = py3langid.classify(text[:2000])
    return str(code) if code in LANGUAGES else "other"
