"""What two near-identical queries must also share before one may reuse the other's
retrieval: their numbers, their negations and their named entities.

Embeddings of "When did Tesla die?" and "When did Edison die?", or of "Which year was
the treaty signed, 1648?" and "... 1649?", or of "Is aspirin safe?" and "Is aspirin
not safe?", sit well above any cosine threshold a paraphrase cache can use. The
semantic query cache therefore only reuses a retrieval when the cosine is high AND the
guard features below are equal. The features are cheap (regular expressions and word
lists, no model) and multilingual; where a language has no case (Chinese, Japanese,
Arabic, Hindi) only quoted strings stand in for entities. Extra features only cost hit
rate, never correctness, so the lists lean towards flagging.
"""

# ruff: noqa: RUF001  (non-ASCII punctuation and letters are the point of this module)
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# Words that negate, by language. Whole-word matches, case-folded.
_NEGATION_WORDS = frozenset(
    """
    not no never none nobody nothing neither nor nowhere without cannot
    nicht kein keine keinen keinem keiner keines nie niemals nichts ohne
    ne pas jamais aucun aucune rien sans
    nunca jamás jamas ningún ningun ninguno ninguna nada sin tampoco
    non mai nessun nessuno nessuna niente nulla senza
    não nao nenhum nenhuma sem
    niet geen nooit niets zonder
    nie nigdy żaden żadna żadne nic bez
    не нет никогда ни ничего без
    değil yok hiç
    नहीं मत
    لا ليس لم لن غير بدون
    """.split()  # noqa: SIM905  (a word list reads better as prose)
)
# Contractions and particles that attach to other words: matched as substrings.
_NEGATION_AFFIXES_LATIN = ("n't", "n’t")
_NEGATION_PREFIX_FR = re.compile(r"\bn['’]", re.IGNORECASE)
# Scripts without spaces: a substring is a word. 不/没/無/未/别 (zh), ない/ません/ず (ja).
_NEGATION_CJK = ("不", "没", "沒", "无", "無", "未", "别", "ない", "ません", "なかった")

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*", re.UNICODE)
_QUOTED = re.compile(
    r"\"([^\"]{1,80})\"|“([^”]{1,80})”|«\s*([^»]{1,80}?)\s*»|„([^“”]{1,80})[“”]"
    r"|「([^」]{1,80})」|『([^』]{1,80})』|'([^']{2,80})'"
)
_POSSESSIVE = re.compile(r"['’]s$")
_SENTENCE_END = re.compile(r"[.!?。！？]\s*")

# Capitalised words that open a question in the product's languages and are not names.
_OPENERS = frozenset(
    """
    what who whom whose when where why how which is are was were do does did can could
    should would will shall may might has have had the a an in on at of for from to by
    tell give list name explain describe please
    was wer wen wem wessen wann wo woher wohin warum wieso weshalb wie welche welcher
    welches ist sind war waren hat haben kann können der die das ein eine im am zu
    qué que quién quien quiénes cuándo cuando dónde donde por cómo como cuál cual cuáles
    cuánto cuánta cuántos cuántas el la los las un una en es son fue fueron
    quel quelle quels quelles qui quand où ou pourquoi comment combien le les une est
    sont dans pour
    chi cosa che quando dove perché come quale quali quanto quanti il lo gli è sono
    quem quando onde porquê porque qual quais quantos quantas o os um uma é são foi no na
    wat wie wanneer waar waarom hoe welke het een zijn
    co kto kiedy gdzie dlaczego jak który która które ile jest są czy w
    что кто когда где почему как какой какая какие сколько в
    ne kim nerede neden nasıl hangi kaç
    """.split()  # noqa: SIM905  (a word list reads better as prose)
)


# What a question asks for. Two questions of different kinds ("When did the ice age
# begin?" / "Who named the ice age?") are different questions however close their
# vectors; a question with no interrogative word is its own kind ("Tesla's birthplace").
_QUESTION_KINDS: dict[str, tuple[str, ...]] = {
    "when": (
        "when", "what year", "which year", "what date", "what time", "wann", "welchem jahr",
        "cuándo", "cuando", "qué año", "quand", "quelle année", "quando", "che anno",
        "que ano", "wanneer", "kiedy", "когда", "ne zaman", "何时", "什么时候", "哪一年",
        "哪年", "いつ", "何年", "متى",
    ),
    "who": (
        "who", "whom", "whose", "wer", "wem", "wen", "wessen", "quién", "quien", "quiénes",
        "qui", "chi", "quem", "wie is", "kto", "кто", "kim", "谁", "誰", "だれ", "من هو",
        "من هي",
    ),
    "where": (
        "where", "wo", "woher", "wohin", "dónde", "donde", "où", "dove", "onde", "waar",
        "gdzie", "где", "nerede", "哪里", "哪儿", "どこ", "أين",
    ),
    "why": (
        "why", "warum", "wieso", "weshalb", "por qué", "pourquoi", "perché", "por que",
        "waarom", "dlaczego", "почему", "neden", "为什么", "なぜ", "لماذا",
    ),
    "quantity": (
        "how many", "how much", "wie viele", "wie viel", "cuántos", "cuántas", "cuánto",
        "cuánta", "combien", "quanti", "quante", "quanto", "quantos", "quantas", "hoeveel",
        "ile", "сколько", "kaç", "多少", "几", "いくつ", "كم",
    ),
}  # fmt: skip
_KIND_PATTERNS = {
    kind: re.compile(
        "|".join(
            rf"(?<!\w){re.escape(w)}(?!\w)" if w.isascii() or " " in w else re.escape(w)
            for w in words
        )
    )
    for kind, words in _QUESTION_KINDS.items()
}


@dataclass(frozen=True, slots=True)
class GuardFeatures:
    """What two queries must share for a cache hit: numbers, negations and question kind
    exactly (``signature``), and each other's named entities (``entities_match``)."""

    numbers: tuple[str, ...]
    negations: int
    question: tuple[str, ...]
    entities: tuple[str, ...]

    def signature(self) -> bytes:
        """8 bytes equal exactly when numbers, negations and question kind are (stored
        next to each cached vector, so a lookup filters on it before any cosine)."""
        text = "|".join((",".join(self.numbers), f"{self.negations}", ",".join(self.question)))
        return hashlib.blake2b(text.encode(), digest_size=8).digest()


def question_kind(text: str) -> tuple[str, ...]:
    folded = " ".join(text.casefold().split())
    return tuple(kind for kind, pattern in _KIND_PATTERNS.items() if pattern.search(folded))


def _contains(text: str, entity: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(entity)}(?!\w)", text) is not None


def entities_match(
    a_text: str, a_entities: Sequence[str], b_text: str, b_entities: Sequence[str]
) -> bool:
    """Every entity of each query occurs in the other (case-insensitively): a repeat typed
    in lower case still matches, "Tesla" against "Edison" does not."""
    fa, fb = " ".join(a_text.casefold().split()), " ".join(b_text.casefold().split())
    return all(_contains(fb, e) for e in a_entities) and all(_contains(fa, e) for e in b_entities)


def _norm_number(raw: str) -> str:
    # "1,000", "1.000" and "1000" are one number; so are "3.5" and "3,5". int() reads
    # any script's decimal digits (Arabic-Indic, Devanagari, full-width).
    digits = "".join(c for c in raw if c.isdigit())
    return str(int(digits)) if digits else raw


def numbers(text: str) -> tuple[str, ...]:
    return tuple(sorted(_norm_number(m.group()) for m in _NUMBER.finditer(text)))


def negations(text: str) -> int:
    folded = text.casefold()
    count = sum(1 for w in _WORD.findall(folded) if w in _NEGATION_WORDS)
    count += sum(folded.count(a) for a in _NEGATION_AFFIXES_LATIN)
    count += len(_NEGATION_PREFIX_FR.findall(folded))
    count += sum(folded.count(p) for p in _NEGATION_CJK)
    return count


def _is_name(word: str, sentence_start: bool) -> bool:
    if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
        return True  # GPT-4, COVID19, A380
    letters = [c for c in word if c.isalpha()]
    if not letters or not letters[0].isupper():
        return False
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return True  # NASA, EU
    if any(c.isupper() for c in letters[1:]):
        return True  # iPhone-style inner capitals, McDonald
    if sentence_start:
        return word.casefold() not in _OPENERS
    return True


def entities(text: str) -> tuple[str, ...]:
    """Quoted strings and capitalised words (not a question's opening word)."""
    found: set[str] = set()
    for m in _QUOTED.finditer(text):
        quoted = next(g for g in m.groups() if g is not None)
        found.add(" ".join(quoted.casefold().split()))
    for sentence in _SENTENCE_END.split(text):
        for i, m in enumerate(_WORD.finditer(sentence)):
            word = unicodedata.normalize("NFC", m.group())
            if _is_name(word, sentence_start=i == 0):
                found.add(_POSSESSIVE.sub("", word.casefold()))
    return tuple(sorted(found))


def features(text: str) -> GuardFeatures:
    return GuardFeatures(
        numbers=numbers(text),
        negations=negations(text),
        question=question_kind(text),
        entities=entities(text),
    )


def allow(a: str, b: str) -> bool:
    """The guards' verdict on two queries (what the cache applies to a vector match)."""
    fa, fb = features(a), features(b)
    return fa.signature() == fb.signature() and entities_match(a, fa.entities, b, fb.entities)


NO_GUARD = GuardFeatures(numbers=(), negations=0, question=(), entities=())
