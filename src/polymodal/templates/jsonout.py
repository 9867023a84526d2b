"""JSON answers: pull the document out of a model's reply and check it against the
template's JSON Schema (draft 2020-12)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

MAX_REPORTED_ERRORS = 5  # schema errors quoted back to the model in a repair request

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


@dataclass(frozen=True, slots=True)
class JsonCheck:
    document: Any = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``schema`` is not a valid JSON Schema."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"not a valid JSON Schema: {e.message}") from e


@functools.lru_cache(maxsize=512)
def _validator(schema_json: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(schema_json))


def extract(text: str) -> str:
    """The JSON text in a reply: inside a code fence if there is one, else from the first
    brace or bracket to the last."""
    m = _FENCE.search(text)
    if m:
        return m.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return text.strip()
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    return text[start : end + 1] if end > start else text[start:]


def _where(path: Any) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "$" + "".join(parts)


def validate(text: str, schema: dict[str, Any]) -> JsonCheck:
    raw = extract(text)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return JsonCheck(None, [f"not valid JSON: {e}"])
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    errors = sorted(
        validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]
    )
    messages = [f"{_where(e.absolute_path)}: {e.message}" for e in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        messages.append(f"... and {len(errors) - MAX_REPORTED_ERRORS} more errors")
    return JsonCheck(document, messages)
