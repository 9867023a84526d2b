"""Which language a text is written in, among the 11 product languages (py3langid,
offline, ~0.3 ms per call), and the text worth looking at in a model's answer."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

from polymodal.templates.schema import LANGUAGES

# Below this many letters a guess is noise ("Acme GmbH" is 18% English).
MIN_LETTERS = 24
# Detecting the user's language from form inputs: trust a guess this sure, or fall back.
INPUT_MIN_CONFIDENCE = 0.6
# Checking an answer: call it wrong only when this sure of another language, so a
# technical answer full of English terms is not retried for nothing.
OUTPUT_MIN_CONFIDENCE = 0.8
SAMPLE_CHARS = 3000  # detection reads at most this much (accuracy plateaus far earlier)

_FENCE = re.compile(r"```.*?(```|$)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"https?://\S+|www\.\S+")
_TAG = re.compile(r"<[^>]{1,200}>")
_PLACEHOLDER = re.compile(r"\[[A-Z0-9 _/-]{2,40}\]")  # [DATE], [COMPANY NAME]
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True, slots=True)
class Detected:
    lang: str | None  # None: not enough text to tell
    confidence: float


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    return identifier


def warm_up() -> None:
    """Load the model (~1 s) at start-up rather than on the first request."""
    _identifier()


def detect(text: str) -> Detected:
    sample = text[:SAMPLE_CHARS]
    if len(_LETTER.findall(sample)) < MIN_LETTERS and not _cjk(sample):
        return Detected(None, 0.0)
    code, confidence = _identifier().classify(sample)
    return Detected(str(code), float(confidence))


def _cjk(text: str) -> bool:
    """Short CJK text still says a lot: 8 ideographs or kana are a sentence."""
    return sum(1 for ch in text if "\u3040" <= ch <= "\u9fff") >= 8


def prose(text: str, output_format: str) -> str:
    """The natural-language part of an answer: code, URLs, tags, placeholders and (for
    JSON) keys removed, so an answer is judged by its sentences."""
    if output_format == "json":
        try:
            return "\n".join(_strings(orjson.loads(text)))
        except orjson.JSONDecodeError:
            pass
    for pattern in (_FENCE, _INLINE_CODE, _URL, _TAG, _PLACEHOLDER):
        text = pattern.sub(" ", text)
    return text


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def wrong_language(text: str, output_format: str, expected: str) -> str | None:
    """The language the answer is in when it is confidently not ``expected``, else None."""
    found = detect(prose(text, output_format))
    if found.lang is None or found.lang == expected or found.confidence < OUTPUT_MIN_CONFIDENCE:
        return None
    return found.lang
