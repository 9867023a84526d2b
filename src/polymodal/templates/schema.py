"""The shape of a content template, as stored in ``templates/catalog/<category>/<id>.yaml``.

A template is product content: a professional picks it, fills a short form, and gets a
finished piece in their language. Titles, descriptions, field labels and help exist in
every product language; the prompt itself is written once (in English, the language
models follow best) and the renderer adds the output-language and style instructions.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "de", "it", "pt", "nl", "pl", "ja", "zh", "ar")
CATEGORIES: tuple[str, ...] = (
    "marketing",
    "advertising",
    "social-media",
    "seo",
    "ecommerce",
    "sales",
    "legal",
    "hr",
    "technical-writing",
    "software-engineering",
    "customer-support",
    "education",
    "creative-writing",
    "business-finance",
)
_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _require_all_languages(value: dict[str, Any], what: str) -> dict[str, Any]:
    missing = [lang for lang in LANGUAGES if lang not in value]
    extra = [lang for lang in value if lang not in LANGUAGES]
    if missing or extra:
        raise ValueError(f"{what}: missing languages {missing}, unknown languages {extra}")
    return value


class LocalizedText(_Strict):
    title: str = Field(min_length=3, max_length=120)
    description: str = Field(min_length=10, max_length=400)


class Option(_Strict):
    value: str = Field(pattern=r"^[a-z0-9_-]+$")
    labels: dict[str, str]

    @field_validator("labels")
    @classmethod
    def _all_languages(cls, v: dict[str, str]) -> dict[str, str]:
        return _require_all_languages(v, "option labels")


FieldType = Literal["string", "text", "enum", "integer", "number", "boolean", "list"]


class InputField(_Strict):
    name: str
    type: FieldType
    required: bool = False
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = Field(default=None, ge=1)
    options: list[Option] | None = None
    default: Any = None
    labels: dict[str, str]
    help: dict[str, str]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FIELD.match(v):
            raise ValueError("field name must be snake_case")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _require_all_languages(v, "labels")

    @field_validator("help")
    @classmethod
    def _help(cls, v: dict[str, str]) -> dict[str, str]:
        return _require_all_languages(v, "help")

    @model_validator(mode="after")
    def _consistent(self) -> InputField:
        if self.type == "enum" and not self.options:
            raise ValueError(f"enum field {self.name!r} needs options")
        if self.type != "enum" and self.options:
            raise ValueError(f"only enum fields take options ({self.name!r})")
        if self.type in ("string", "text") and self.max_length is None:
            raise ValueError(f"text field {self.name!r} needs max_length")
        return self


class Output(_Strict):
    format: Literal["markdown", "plain", "html", "json"]
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _schema_iff_json(self) -> Output:
        if (self.format == "json") != (self.json_schema is not None):
            raise ValueError("output.schema is required for json output and only for it")
        return self


class Template(_Strict):
    id: str
    version: int = Field(ge=1)
    category: str
    tags: list[str] = Field(min_length=1)
    tier: Literal["simple", "complex", "critical"]
    disclaimer: Literal["legal", "medical", "financial"] | None = None
    i18n: dict[str, LocalizedText]
    fields: list[InputField] = Field(min_length=1)
    system: str = Field(min_length=20)
    prompt: str = Field(min_length=40)
    output: Output
    example: dict[str, Any]

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("id must be kebab-case")
        return v

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        if v not in CATEGORIES:
            raise ValueError(f"unknown category {v!r}")
        return v

    @field_validator("i18n")
    @classmethod
    def _i18n(cls, v: dict[str, LocalizedText]) -> dict[str, LocalizedText]:
        return _require_all_languages(v, "i18n")

    @model_validator(mode="after")
    def _example_matches_fields(self) -> Template:
        names = {f.name for f in self.fields}
        unknown = set(self.example) - names
        if unknown:
            raise ValueError(f"example has unknown fields {sorted(unknown)}")
        missing = [f.name for f in self.fields if f.required and f.name not in self.example]
        if missing:
            raise ValueError(f"example lacks required fields {missing}")
        if len(names) != len(self.fields):
            raise ValueError("duplicate field names")
        return self
