"""Request classifier: tier, task and language from cheap features, in well under a
millisecond, before any model is called.

Rules read features that cost microseconds: length, code fences, math notation, cue
phrases in the 11 product languages (cues.yaml), requested output length, tools, images,
conversation depth. When the packaged learned model (`learned.py`, trained by
`scripts/train_router.py`) is present it decides the task when it is confident and whether
the request is hard; the rules keep the task they found cues for, the high-stakes path to
`critical`, and a request they send up stays up. Without the model files, or for a message
shorter than any the model was trained on, the rules alone decide.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import ahocorasick
import yaml

from polymodal.domain.chat import ChatRequest, Message
from polymodal.gateway.learned import LearnedScore, LearnedScorer, load_scorer, packaged_model_paths

CUE_WINDOW = 2000  # characters read at each end of a long message
# py3langid's cost grows with the text (~3 ms for 2,000 characters, ~0.4 ms for 300); the
# first few hundred characters name the language as well.
LANGUAGE_WINDOW = 300
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
TASKS = ("chat", *TASK_ORDER)
# Python's re tries every branch of an alternation at every position; a lookahead on the
# branches' first characters lets it skip most positions at once (2-4 times faster on a
# 4,000-character window, same matches).
_INDENTED_CODE = re.compile(r"^\s{4}\S", re.MULTILINE)  # with "```": a code block
_CODE_SYNTAX = re.compile(
    r"(?=[a-zA-Z=#;{])"
    r"(?:\b(?:def |class |import |function\b|return\b|const |public static\b|SELECT\b)"
    r"|=>|#include|[;{][^\S\n]*$)",
    re.MULTILINE,
)
_MATH = re.compile(
    r"(?=[\d\\∫√∑$x])(?:\d\s*[-+*/^=]\s*\d|\\frac|\\int|\\sum|∫|√|∑|\$[^$]+\$|\bx\^2\b)"
)
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: str
    task: str
    language: str
    est_input_tokens: int
    est_output_tokens: int
    confidence: float
    reasons: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class TextSignals:
    """What the rules read in the last user message (its cue window)."""

    hits: dict[str, int]
    code_fence: bool
    code_syntax: bool
    math: bool


@cache
def _cue_data() -> dict[str, Any]:
    text = resources.files("polymodal.gateway").joinpath("cues.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@cache
def _automaton() -> Any:
    """All cues of cues.yaml in one Aho-Corasick automaton: one pass over the text finds
    every cue of every key, whatever the number of cues (matching is language-agnostic,
    so a German request with an English keyword still counts)."""
    automaton = ahocorasick.Automaton()
    keys: dict[str, set[str]] = {}
    for group in ("tasks", "signals"):
        for key, by_language in (_cue_data().get(group) or {}).items():
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


def cue_window(text: str) -> str:
    """The instruction is at the start or the end of a long message; a pasted document in
    the middle would only add noise (and time)."""
    if len(text) > 2 * CUE_WINDOW:
        return text[:CUE_WINDOW] + "\n" + text[-CUE_WINDOW:]
    return text


def text_signals(last: str) -> TextSignals:
    """The rules' reading of ``last`` (already cut to its cue window)."""
    fence = "```" in last or bool(_INDENTED_CODE.search(last))
    return TextSignals(
        hits=cue_hits(_normalize(last)),
        code_fence=fence,
        code_syntax=fence or bool(_CODE_SYNTAX.search(last)),
        math=bool(_MATH.search(last)),
    )


def rules_task(signals: TextSignals) -> tuple[str, int]:
    """The first task whose cues appear, by a fixed precedence, and its cue count."""
    task, task_hits = "chat", 0
    for candidate in TASK_ORDER:
        count = signals.hits.get(candidate, 0)
        if candidate == "code" and signals.code_syntax:
            count += 2
        if candidate == "math" and signals.math:
            count += 2
        if count > task_hits:
            task, task_hits = candidate, count
    return task, task_hits


_CHAR_BUCKETS = (64, 256, 1024, 4096)
_LINE_BUCKETS = ((1, "1"), (5, "2-5"), (20, "6-20"))


@cache
def rule_feature_names() -> tuple[str, ...]:
    """The rule features the learned model reads, by name (stored in the model's JSON)."""
    data = _cue_data()
    cue_keys = [k for group in ("tasks", "signals") for k in (data.get(group) or {})]
    return (
        *(f"cue:{k}" for k in cue_keys),
        "code_fence",
        "code_syntax",
        "math_notation",
        *(f"rules_task:{t}" for t in TASKS),
        *(f"chars:<{b}" for b in _CHAR_BUCKETS),
        f"chars:>={_CHAR_BUCKETS[-1]}",
        "log_chars",
        *(f"lines:{name}" for _, name in _LINE_BUCKETS),
        f"lines:>{_LINE_BUCKETS[-1][0]}",
        "digit_ratio",
        "max_digit_run",
        "numbers",
        "question_marks",
    )


def rule_features(full_chars: int, last: str, signals: TextSignals) -> dict[str, float]:
    """Rule features of the last user message: ``full_chars`` is its whole length, ``last``
    its cue window. Values are scaled to about [0, 1]."""
    out: dict[str, float] = {f"cue:{k}": min(n, 4) / 4 for k, n in signals.hits.items()}
    out["code_fence"] = float(signals.code_fence)
    out["code_syntax"] = float(signals.code_syntax)
    out["math_notation"] = float(signals.math)
    out[f"rules_task:{rules_task(signals)[0]}"] = 1.0
    bucket = next((f"chars:<{b}" for b in _CHAR_BUCKETS if full_chars < b), None)
    out[bucket or f"chars:>={_CHAR_BUCKETS[-1]}"] = 1.0
    out["log_chars"] = min(math.log1p(full_chars) / math.log(8001), 1.0)
    lines = last.count("\n") + 1
    name = next((n for limit, n in _LINE_BUCKETS if lines <= limit), None)
    out[f"lines:{name}" if name else f"lines:>{_LINE_BUCKETS[-1][0]}"] = 1.0
    if last:
        numbers = _NUMBER.findall(last)
        digits = sum(len(n) for n in numbers)
        out["digit_ratio"] = digits / len(last)
        out["max_digit_run"] = min(max((len(n) for n in numbers), default=0), 12) / 12
        out["numbers"] = min(math.log1p(len(numbers)) / math.log(101), 1.0)
        out["question_marks"] = min(last.count("?"), 5) / 5
    return out


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


_PACKAGED = packaged_model_paths()[0]


class Classifier:
    def __init__(
        self,
        *,
        count_tokens: Callable[[str], int],
        detect_language: Callable[[str], str] | None = None,
        complex_threshold: float = 3.0,
        critical_threshold: float = 7.0,
        model_path: Path | None = _PACKAGED,
    ) -> None:
        """``model_path``: the learned model's ``.npz`` (its ``.json`` beside it); the
        packaged model by default, None for the rules alone. A missing file means the
        rules alone, too. Loaded on the first request, once per process."""
        self._count = count_tokens
        self._detect = detect_language or detect_language_langid
        self._complex = complex_threshold
        self._critical = critical_threshold
        self._model = (model_path, model_path.with_suffix(".json")) if model_path else None

    @property
    def scorer(self) -> LearnedScorer | None:
        return load_scorer(*self._model) if self._model else None

    def classify(self, request: ChatRequest) -> RouteDecision:
        messages = request.messages
        users = [m for m in messages if m["role"] == "user"]
        full = _text(users[-1]) if users else ""
        last = cue_window(full)
        signals = text_signals(last)
        hits = signals.hits
        reasons: list[str] = []

        input_tokens = sum(self._count(_text(m)) for m in messages)
        requested = request.max_output_tokens

        task, task_hits = rules_task(signals)
        task = _request_task(task, request)
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
        decided = (f"score={score:.1f}", *reasons)

        scorer = self.scorer
        if scorer is not None and len(full) < scorer.min_chars:
            short = f"rules alone: shorter than any training prompt ({scorer.min_chars} chars)"
            decided = (*decided, short)
        elif scorer is not None:
            learned = scorer.score(full, rule_features(len(full), last, signals))
            task, tier, confidence, decided = _with_learned(
                scorer, learned, rules=(task, task_hits, tier, score), reasons=decided
            )

            task = _request_task(task, request)

        est_output = estimate_output_tokens(tier, long_output=bool(long_out), requested=requested)
        language = self._detect(last) if last.strip() else "other"
        return RouteDecision(
            tier=tier,
            task=task,
            language=language,
            est_input_tokens=input_tokens,
            est_output_tokens=est_output,
            confidence=confidence,
            reasons=decided,
        )


def estimate_output_tokens(tier: str, *, long_output: bool, requested: int | None) -> int:
    """The answer's expected length: what the request caps it at, else a guess by tier."""
    return requested or (1200 if long_output else 300 if tier != "simple" else 150)


def _request_task(task: str, request: ChatRequest) -> str:
    """A chat request that forces a tool call or asks for JSON is an extraction."""
    if task != "chat":
        return task
    if request.params.get("tools") and request.params.get("tool_choice") not in (None, "auto"):
        return "extraction"
    fmt = (request.params.get("response_format") or {}).get("type")
    return "extraction" if fmt in ("json_object", "json_schema") else task


def _with_learned(
    scorer: LearnedScorer,
    learned: LearnedScore,
    *,
    rules: tuple[str, int, str, float],
    reasons: tuple[str, ...],
) -> tuple[str, str, float, tuple[str, ...]]:
    """Task, tier, confidence and reasons once the learned scores are in.

    The model was trained on benchmark items (bench/data/ROUTING_PROMPTS.md), whose
    scaffolding it learns along with the task: on plainly worded requests ("Traduce al
    inglés: ...", "Summarize the following article ...") it answers "chat", where the cue
    rules are right. So a task the rules found cues for stands, and the model names the
    task only when the rules found none and it is confident. It decides whether the request
    is hard; the rules keep `critical` (high stakes), and a request the rules send up is not
    sent down (the model never saw, say, "design ... step by step", tools or images)."""
    rules_task_, task_hits, rules_tier, score = rules
    threshold = scorer.hard_threshold
    hard = learned.p_hard >= threshold
    head = f"p_hard={learned.p_hard:.2f}" + (" >= " if hard else " < ") + f"{threshold:.2f}"
    guess = f"learned {learned.task} p={learned.task_probability:.2f}"
    if task_hits:
        task, why_task = rules_task_, f"task={rules_task_} (rules, {task_hits} cues; {guess})"
    elif learned.task_probability >= scorer.task_min_probability:
        task = learned.task
        why_task = f"task={task} ({guess} >= {scorer.task_min_probability:.2f}; no rule cues)"
    else:
        task = rules_task_
        why_task = f"task={task} (no rule cues; {guess} < {scorer.task_min_probability:.2f})"
    if rules_tier == "critical":
        tier, why_tier = "critical", f"critical: rules score={score:.1f} with high-stakes cues"
    elif hard:
        tier, why_tier = "complex", "complex: learned difficulty"
    elif rules_tier == "complex":
        tier, why_tier = "complex", f"complex: rules score={score:.1f}"
    else:
        tier, why_tier = "simple", "simple: learned difficulty"
    confidence = learned.p_hard if tier != "simple" else 1.0 - learned.p_hard
    rules_reasons = tuple(f"rules: {r}" for r in reasons)
    return task, tier, round(confidence, 2), (why_tier, head, why_task, *rules_reasons)


def detect_language_langid(text: str) -> str:
    """One of the 11 product languages, or "other" (py3langid; offline, ~0.2 ms)."""
    import py3langid

    code, _ = py3langid.classify(text[:LANGUAGE_WINDOW])
    return str(code) if code in LANGUAGES else "other"
