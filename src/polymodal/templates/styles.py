"""Per-language style guides (``templates/styles/<lang>.yaml``) and the instructions they
add to every generation: output language, register, locale conventions, quotation marks,
writing direction and the output format.

The guides are data: a linguist can change how Spanish is written without touching code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from polymodal.templates.schema import LANGUAGES

_LOCALE = re.compile(r"^([a-z]{2})[-_]([A-Za-z]{2})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocaleStyle(_Strict):
    number_format: str
    date_format: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    currency_format: str
    units: Literal["metric", "imperial"]
    digits: Literal["latin", "arabic_indic"] = "latin"
    notes: str = ""


class QuotationMarks(_Strict):
    primary: tuple[str, str]
    secondary: tuple[str, str]


class Disclaimers(_Strict):
    legal: str = Field(min_length=20)
    financial: str = Field(min_length=20)
    medical: str = Field(min_length=20)


class StyleGuide(_Strict):
    language: str
    name: str
    native_name: str
    direction: Literal["ltr", "rtl"]
    default_register: str
    registers: dict[str, str] = Field(min_length=1)
    locales: dict[str, LocaleStyle] = Field(min_length=1)
    default_locale: str
    quotation_marks: QuotationMarks
    instruction: str = Field(min_length=20)
    disclaimers: Disclaimers

    @model_validator(mode="after")
    def _consistent(self) -> StyleGuide:
        if self.language not in LANGUAGES:
            raise ValueError(f"unknown language {self.language!r}")
        if self.default_register not in self.registers:
            raise ValueError(f"default_register {self.default_register!r} is not in registers")
        if self.default_locale not in self.locales:
            raise ValueError(f"default_locale {self.default_locale!r} is not in locales")
        for locale in self.locales:
            m = _LOCALE.match(locale)
            if not m or m.group(1) != self.language:
                raise ValueError(f"locale {locale!r} must look like {self.language}-XX")
        return self

    def disclaimer(self, kind: str | None) -> str | None:
        return None if kind is None else str(getattr(self.disclaimers, kind))


def normalize_locale(value: str) -> str:
    """``es_mx`` / ``es-mx`` -> ``es-MX``; anything else unchanged (then refused)."""
    m = _LOCALE.match(value.strip())
    return f"{m.group(1).lower()}-{m.group(2).upper()}" if m else value.strip()


@dataclass(frozen=True, slots=True)
class Voice:
    """The resolved output voice of one generation."""

    style: StyleGuide
    register: str
    locale: str

    @property
    def lang(self) -> str:
        return self.style.language


_FORMAT_RULES = {
    "markdown": "Format the answer as Markdown (headings, lists and tables where they help); "
    "no preamble such as 'Here is', no closing offer of further help.",
    "plain": "Answer in plain text without Markdown syntax (no #, *, backticks or tables); "
    "no preamble and no closing offer of further help.",
    "html": "Answer with a clean, semantic HTML fragment (no <html>, <head> or <body>, no "
    "inline styles, no scripts); no text outside the HTML.",
    "json": "Answer with one JSON document only: no Markdown code fence, no text before or "
    "after it. It must validate against this JSON Schema:",
}


def style_block(voice: Voice, output_format: str, json_schema: dict[str, Any] | None) -> str:
    """The instructions appended to the template's system prompt."""
    s, loc = voice.style, voice.style.locales[voice.locale]
    quotes = s.quotation_marks
    lines = [
        "## Output language and style",
        f"- Write the entire answer in {s.name} ({s.native_name}) for the {voice.locale} "
        "locale: headings, labels and every sentence. Keep names, brands, product names, "
        "code and text quoted from the input exactly as given.",
        f"- Register ({voice.register}): {s.registers[voice.register]}",
        f"- Locale {voice.locale}: numbers like {loc.number_format}; dates as "
        f"{loc.date_format}; currency {loc.currency} written like {loc.currency_format}; "
        f"{loc.units} units"
        + ("; Arabic-Indic digits (٠١٢٣٤٥٦٧٨٩)." if loc.digits == "arabic_indic" else ".")
        + (f" {loc.notes}" if loc.notes else ""),
        f"- Quotation marks: {quotes.primary[0]}…{quotes.primary[1]}, nested "
        f"{quotes.secondary[0]}…{quotes.secondary[1]}.",
        f"- {s.instruction}",
    ]
    if s.direction == "rtl":
        lines.append(
            "- The text is read right to left; keep Latin-script names and numbers in their "
            "normal order"
            + (
                ' and set dir="rtl" and lang on the outermost HTML element.'
                if output_format == "html"
                else "."
            )
        )
    rule = _FORMAT_RULES[output_format]
    if output_format == "json" and json_schema is not None:
        rule += "\n" + json.dumps(json_schema, ensure_ascii=False, separators=(",", ":"))
        rule += (
            f"\n  JSON keys and enum values stay exactly as in the schema; free-text values "
            f"are written in {s.name}."
        )
    lines.append(f"- {rule}")
    return "\n".join(lines)


def language_reminder(voice: Voice, *, stronger: bool, wrong: str | None = None) -> str:
    """The last line of the user prompt (small models follow the end of a prompt best);
    ``stronger`` is the retry after an answer in the wrong language."""
    s = voice.style
    if not stronger:
        return f"Write the answer in {s.name} ({voice.locale})."
    was = f" Your previous answer was in {wrong_name(wrong)}, which is wrong." if wrong else ""
    return (
        f"IMPORTANT: the answer must be written entirely in {s.name} ({s.native_name}), "
        f"not in any other language.{was} Translate every heading and sentence into "
        f"{s.name}; only names, code and quoted input stay as they are."
    )


_NAMES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "ja": "Japanese",
    "zh": "Chinese",
    "ar": "Arabic",
}


def wrong_name(code: str | None) -> str:
    return _NAMES.get(code or "", "another language")
