"""Templates as a client sees them: localized into one language, and the negotiation of
that language from ``Accept-Language``."""

from __future__ import annotations

from typing import Any

from polymodal.templates.catalog import Entry
from polymodal.templates.schema import LANGUAGES, InputField
from polymodal.templates.styles import StyleGuide

DEFAULT_LANGUAGE = "en"


def negotiate(accept_language: str | None) -> str | None:
    """The best product language in an ``Accept-Language`` header, or None.
    ``es-MX,es;q=0.9,en;q=0.5`` -> ``es``; region tags match their language."""
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = tag.strip().split("-")[0].split("_")[0].lower()
        if lang in LANGUAGES and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def summary(entry: Entry, lang: str) -> dict[str, Any]:
    t = entry.template
    text = t.i18n[lang]
    return {
        "id": t.id,
        "version": t.version,
        "source": entry.source,
        "category": t.category,
        "tags": list(t.tags),
        "tier": t.tier,
        "format": t.output.format,
        "lang": lang,
        "title": text.title,
        "description": text.description,
    }


def _field(f: InputField, lang: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f.name,
        "type": f.type,
        "required": f.required,
        "label": f.labels[lang],
        "help": f.help[lang],
    }
    for key in ("min_length", "max_length", "minimum", "maximum", "max_items", "default"):
        value = getattr(f, key)
        if value is not None:
            out[key] = value
    if f.options:
        out["options"] = [{"value": o.value, "label": o.labels[lang]} for o in f.options]
    return out


def detail(entry: Entry, lang: str, style: StyleGuide) -> dict[str, Any]:
    t = entry.template
    return {
        **summary(entry, lang),
        "direction": style.direction,
        "languages": list(LANGUAGES),
        "disclaimer": t.disclaimer,
        "disclaimer_text": style.disclaimer(t.disclaimer),
        "output": {"format": t.output.format, "schema": t.output.json_schema},
        "fields": [_field(f, lang) for f in t.fields],
        "example": dict(t.example),
        "registers": list(style.registers),
        "default_register": style.default_register,
        "locales": list(style.locales),
        "default_locale": style.default_locale,
    }
