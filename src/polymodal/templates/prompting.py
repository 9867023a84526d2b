"""From a template, a filled form and the caller's choices to the final prompt: the
output voice (language, register, locale), the rendered system and user prompts with the
style guide applied, and the disclaimer the answer will carry."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from polymodal.domain.chat import Message
from polymodal.domain.errors import ValidationFailed
from polymodal.templates import language, sandbox
from polymodal.templates.catalog import Catalog, Entry
from polymodal.templates.inputs import check_language, fail
from polymodal.templates.schema import LANGUAGES, Template
from polymodal.templates.styles import (
    Voice,
    language_reminder,
    normalize_locale,
    style_block,
)


@dataclass(frozen=True, slots=True)
class VoiceRequest:
    lang: str | None = None
    locale: str | None = None
    register: str | None = None


def resolve_voice(
    catalog: Catalog, wanted: VoiceRequest, *, ui_lang: str, input_text: str
) -> tuple[Voice, bool]:
    """The voice to write in, and whether the language was detected from the inputs.

    Language: ``lang``, else the language of ``locale``, else the language the inputs are
    written in (when the detector is sure), else the caller's UI language."""
    lang = check_language(wanted.lang, ui_lang=ui_lang) if wanted.lang else None
    locale = normalize_locale(wanted.locale) if wanted.locale else None
    if locale is not None:
        prefix = locale.split("-", 1)[0].lower()
        if prefix not in LANGUAGES or (lang is not None and prefix != lang):
            options = catalog.styles[lang].locales if lang else _all_locales(catalog)
            raise fail(
                ui_lang, "locale", "unknown_locale", value=wanted.locale, options=_join(options)
            )
        lang = prefix
    detected = False
    if lang is None:
        found = language.detect(input_text)
        if found.lang is not None and found.confidence >= language.INPUT_MIN_CONFIDENCE:
            lang, detected = found.lang, True
        else:
            lang = ui_lang
    style = catalog.styles[lang]
    if locale is None:
        locale = style.default_locale
    elif locale not in style.locales:
        raise fail(
            ui_lang, "locale", "unknown_locale", value=wanted.locale, options=_join(style.locales)
        )
    register = wanted.register.strip().lower() if wanted.register else style.default_register
    if register not in style.registers:
        raise fail(
            ui_lang,
            "register",
            "unknown_register",
            value=wanted.register,
            options=_join(style.registers),
        )
    return Voice(style=style, register=register, locale=locale), detected


def _join(names: Any) -> str:
    return ", ".join(names)


def _all_locales(catalog: Catalog) -> list[str]:
    return [loc for s in catalog.styles.values() for loc in s.locales]


@dataclass(frozen=True, slots=True)
class Rendered:
    """The prompt of one generation, ready to send."""

    entry: Entry
    voice: Voice
    lang_detected: bool
    system: str
    body: str  # the template's rendered prompt, before the language reminder
    disclaimer: str | None

    @property
    def template(self) -> Template:
        return self.entry.template

    @property
    def output_format(self) -> str:
        return self.template.output.format

    def prompt(self, *, stronger: bool = False, wrong: str | None = None) -> str:
        return self.body + "\n\n" + language_reminder(self.voice, stronger=stronger, wrong=wrong)

    def messages(self, *, stronger: bool = False, wrong: str | None = None) -> list[Message]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.prompt(stronger=stronger, wrong=wrong)},
        ]


def render(entry: Entry, context: dict[str, Any], voice: Voice, *, lang_detected: bool) -> Rendered:
    t = entry.template
    try:
        # Built-ins are reviewed code; a tenant's template runs under a time limit.
        limit = None if entry.source == "builtin" else sandbox.CUSTOM_RENDER_LIMIT_S
        body = sandbox.render(t.prompt, context, limit_s=limit)
        system = sandbox.render(t.system, context, limit_s=limit)
    except sandbox.TemplateRenderError as e:
        # Only a tenant's template can get here (built-ins render their examples at
        # start-up): an input its author did not plan for.
        raise ValidationFailed(
            f"inputs: the template cannot be rendered with these inputs: {e}",
            param="inputs",
            code="template_render_error",
        ) from e
    system += "\n\n" + style_block(voice, t.output.format, t.output.json_schema)
    return Rendered(
        entry=entry,
        voice=voice,
        lang_detected=lang_detected,
        system=system,
        body=body,
        disclaimer=voice.style.disclaimer(t.disclaimer),
    )


def disclaimer_suffix(rendered: Rendered) -> str:
    """What is appended to the answer so the note is visible in the output language (JSON
    answers carry it beside the document instead)."""
    note = rendered.disclaimer
    if note is None or rendered.output_format == "json":
        return ""
    if rendered.output_format == "markdown":
        return f"\n\n---\n\n*{note}*"
    if rendered.output_format == "html":
        direction = ' dir="rtl"' if rendered.voice.style.direction == "rtl" else ""
        return (
            f'\n<p class="disclaimer" lang="{rendered.voice.lang}"{direction}>'
            f"<small>{html.escape(note)}</small></p>"
        )
    return f"\n\n{note}"
