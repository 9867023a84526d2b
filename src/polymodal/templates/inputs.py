"""Check a filled form against a template's fields and turn it into the render context.

Every error is a 422 naming the field (``inputs.<name>``), worded in the caller's
language. Lenient where a web form is (``"14"`` for an integer, ``"true"`` for a boolean),
strict everywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from polymodal.domain.errors import ValidationFailed
from polymodal.templates.messages import message
from polymodal.templates.schema import LANGUAGES, InputField, Template

_INT = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def fail(lang: str, param: str, code: str, **values: object) -> ValidationFailed:
    return ValidationFailed(
        f"{param}: {message(lang, code, **values)}", param=param, code=f"input_{code}"
    )


def check_language(value: str, *, ui_lang: str, param: str = "lang") -> str:
    lang = value.strip().lower()
    if lang not in LANGUAGES:
        raise ValidationFailed(
            f"{param}: "
            + message(ui_lang, "unknown_language", value=value, options=", ".join(LANGUAGES)),
            param=param,
            code="unknown_language",
        )
    return lang


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _blank(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, str | list) and not str(value).strip())
        or (isinstance(value, list) and not value)
    )


class _Checker:
    def __init__(self, field: InputField, lang: str) -> None:
        self.f = field
        self.lang = lang
        self.param = f"inputs.{field.name}"
        self.label = field.labels.get(lang) or field.labels["en"]

    def error(self, code: str, **values: object) -> ValidationFailed:
        return fail(self.lang, self.param, code, label=self.label, **values)

    def text(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self.error("type_string")
        text = value.strip()
        if self.f.max_length is not None and len(text) > self.f.max_length:
            raise self.error("too_long", max=self.f.max_length)
        if self.f.min_length is not None and len(text) < self.f.min_length:
            raise self.error("too_short", min=self.f.min_length)
        return text

    def enum(self, value: Any) -> str:
        allowed = [o.value for o in self.f.options or ()]
        if not isinstance(value, str) or value not in allowed:
            raise self.error("not_option", options=", ".join(allowed))
        return value

    def _range(self, value: float) -> None:
        if self.f.minimum is not None and value < self.f.minimum:
            raise self.error("too_small", min=_show(self.f.minimum))
        if self.f.maximum is not None and value > self.f.maximum:
            raise self.error("too_large", max=_show(self.f.maximum))

    def integer(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.error("type_integer")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and _INT.match(value.strip()):
            value = int(value.strip())
        if not isinstance(value, int):
            raise self.error("type_integer")
        self._range(value)
        return value

    def number(self, value: Any) -> float | int:
        if isinstance(value, bool):
            raise self.error("type_number")
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value.strip())
        if (
            not isinstance(value, int | float)
            or value != value
            or value
            in (
                float("inf"),
                float("-inf"),
            )
        ):
            raise self.error("type_number")
        self._range(value)
        return value

    def boolean(self, value: Any) -> bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise self.error("type_boolean")
        return value

    def items(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error("type_list")
        items = [v.strip() for v in value if v.strip()]
        if self.f.max_items is not None and len(items) > self.f.max_items:
            raise self.error("too_many", max=self.f.max_items)
        if self.f.max_length is not None and any(len(v) > self.f.max_length for v in items):
            raise self.error("too_long", max=self.f.max_length)
        return items

    def check(self, value: Any) -> Any:
        kind = self.f.type
        if kind in ("string", "text"):
            return self.text(value)
        if kind == "enum":
            return self.enum(value)
        if kind == "integer":
            return self.integer(value)
        if kind == "number":
            return self.number(value)
        if kind == "boolean":
            return self.boolean(value)
        return self.items(value)


def validate_inputs(template: Template, inputs: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """The render context: every field present (a missing optional one as its default, or
    None), values checked and normalised. Raises ``ValidationFailed`` on the first error,
    in the order of the form."""
    names = {f.name for f in template.fields}
    for name in inputs:
        if name not in names:
            raise fail(lang, f"inputs.{name}", "unknown_field", value=name)
    context: dict[str, Any] = {}
    for field in template.fields:
        value = inputs.get(field.name)
        if _blank(value):
            if field.required:
                raise _Checker(field, lang).error("required")
            context[field.name] = field.default
            continue
        context[field.name] = _Checker(field, lang).check(value)
    return context


def input_text(template: Template, context: Mapping[str, Any]) -> str:
    """The free text a user typed (not enum values), to detect the language they write in."""
    parts: list[str] = []
    for field in template.fields:
        value = context.get(field.name)
        if field.type in ("string", "text") and isinstance(value, str):
            parts.append(value)
        elif field.type == "list" and isinstance(value, list):
            parts.extend(str(v) for v in value)
    return "\n".join(parts)
