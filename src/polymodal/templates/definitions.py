"""One validation for every template, built-in or a tenant's: the schema, the sandbox
safety check of both Jinja2 sources, a valid JSON Schema for JSON output, and an example
that passes the form's own rules and renders."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from polymodal.domain.errors import ValidationFailed
from polymodal.templates import jsonout, sandbox
from polymodal.templates.inputs import validate_inputs
from polymodal.templates.schema import Template

# Path segments used by the API under /v1/templates; no template may take these ids.
RESERVED_IDS = frozenset({"custom", "hidden", "search"})


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _invalid(param: str, message: str, code: str = "invalid_template") -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", param=param, code=code)


def validate_definition(data: Any, *, where: str = "template") -> Template:
    """A checked ``Template`` or ``ValidationFailed`` naming the field (``where.<path>``)."""
    if not isinstance(data, dict):
        raise _invalid(where, "must be an object")
    try:
        template = Template.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = where + _loc(tuple(first["loc"]))
        extra = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise _invalid(param, f"{first['msg']}{extra}") from e
    check_template(template, where=where)
    return template


def check_template(template: Template, *, where: str = "template") -> None:
    names = [f.name for f in template.fields]
    for part in ("system", "prompt"):
        try:
            sandbox.check_source(getattr(template, part), variables=names)
        except sandbox.TemplateSourceError as e:
            raise _invalid(f"{where}.{part}", str(e), code="template_error") from e
    if template.output.json_schema is not None:
        try:
            jsonout.check_schema(template.output.json_schema)
        except ValueError as e:
            raise _invalid(f"{where}.output.schema", str(e)) from e
    for field in template.fields:
        if field.default is not None:
            try:
                validate_inputs(_only(template, field.name), {field.name: field.default}, "en")
            except ValidationFailed as e:
                raise _invalid(
                    f"{where}.fields.{field.name}.default", e.message.split(": ", 1)[-1]
                ) from e
    try:
        context = validate_inputs(template, template.example, "en")
    except ValidationFailed as e:
        param = f"{where}.example" + (e.param or "").removeprefix("inputs")
        raise _invalid(param, e.message.split(": ", 1)[-1]) from e
    for part in ("system", "prompt"):
        try:
            sandbox.render(getattr(template, part), context, limit_s=sandbox.CUSTOM_RENDER_LIMIT_S)
        except sandbox.TemplateRenderError as e:
            raise _invalid(
                f"{where}.{part}", f"does not render with the example: {e}", "template_error"
            ) from e


def _only(template: Template, name: str) -> Template:
    """The template reduced to one field (to check a default on its own)."""
    field = next(f for f in template.fields if f.name == name)
    return template.model_copy(update={"fields": [field], "example": {}})
