"""Fast language identification for routing: writing system first, then function words,
and py3langid only when those do not settle it.

Most prompts settle in microseconds: kana means Japanese, Han without kana Chinese, Arabic
letters Arabic, and a Latin-script prompt usually carries several of its language's most
common words. py3langid (~40-200 us) decides the rest.
"""

from __future__ import annotations

import re

from polymodal.gateway.classifier import LANGUAGES, detect_language_langid

WINDOW = 400  # characters looked at
_KANA = re.compile("[\u3040-\u30ff]")
_HAN = re.compile("[\u4e00-\u9fff]")
_ARABIC = re.compile("[\u0600-\u06ff]")
_WORD = re.compile(r"[a-zàâäáãåçèéêëìíîïñòóôöõùúûüýÿąćęłńśźżœß']+")
# Frequent words that are rare in the other product languages (so one does not vote for
# many): a handful per Latin-script language.
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "and",
            "of",
            "to",
            "is",
            "that",
            "what",
            "how",
            "with",
            "for",
            "this",
            "you",
            "are",
            "it",
            "in",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "los",
            "las",
            "que",
            "del",
            "por",
            "para",
            "una",
            "es",
            "con",
            "cómo",
            "qué",
            "está",
            "este",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "les",
            "des",
            "est",
            "une",
            "pour",
            "que",
            "qui",
            "dans",
            "avec",
            "sur",
            "vous",
            "ce",
            "cette",
        ]
    ),
    "de": frozenset(
        [
            "der",
            "die",
            "das",
            "und",
            "ist",
            "nicht",
            "mit",
            "ein",
            "eine",
            "für",
            "auf",
            "ich",
            "sie",
            "wie",
        ]
    ),
    "it": frozenset(
        [
            "il",
            "che",
            "della",
            "per",
            "una",
            "sono",
            "con",
            "gli",
            "non",
            "del",
            "come",
            "questo",
            "nel",
        ]
    ),
    "pt": frozenset(
        [
            "o",
            "os",
            "que",
            "não",
            "uma",
            "para",
            "com",
            "do",
            "da",
            "em",
            "é",
            "como",
            "você",
            "isso",
        ]
    ),
    "nl": frozenset(
        [
            "de",
            "het",
            "een",
            "van",
            "en",
            "is",
            "dat",
            "niet",
            "op",
            "met",
            "voor",
            "zijn",
            "je",
            "wat",
        ]
    ),
    "pl": frozenset(
        ["i", "w", "nie", "się", "na", "że", "jest", "z", "do", "to", "jak", "co", "czy", "dla"]
    ),
}


def detect(text: str) -> str:
    sample = text[:WINDOW]
    if _KANA.search(sample):
        return "ja"
    words = _WORD.findall(sample.lower())
    latin = sum(len(w) for w in words)
    if len(_HAN.findall(sample)) > latin:
        return "zh"
    if len(_ARABIC.findall(sample)) > latin:
        return "ar"
    if latin:
        scores = {
            lang: sum(1 for w in words if w in vocab) for lang, vocab in FUNCTION_WORDS.items()
        }
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        (best, top), (_, second) = ranked[0], ranked[1]
        if top >= 3 and top >= 2 * second:
            return best
        if top == 0 and len(words) >= 3 and sample.isascii():
            return "en"  # plain ASCII with no other language's function words
    found = detect_language_langid(sample)
    return found if found in LANGUAGES else "other"
