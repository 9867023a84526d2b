"""Request bodies on the hot path: validated straight from JSON bytes by pydantic-core.

FastAPI's body parameters cost a stdlib ``json.loads``, a second pass through pydantic and
its dependency solver on every request; the OpenAI-compatible endpoints take ``Request``
and call `parse` instead. Their OpenAPI schemas are declared with `body_openapi`, and
`install_schemas` adds the models to the document's components.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter, ValidationError

from polymodal.api.openapi import document

M = TypeVar("M", bound=BaseModel)
_SCHEMAS: dict[str, type[BaseModel]] = {}
_REF = "#/components/schemas/{model}"


async def parse(request: Request, adapter: TypeAdapter[M]) -> M:
    raw = await request.body()
    try:
        return adapter.validate_json(raw)
    except ValidationError as e:
        # Same rendering as FastAPI's own validation errors (422 naming the field; 400
        # for malformed JSON).
        raise RequestValidationError(e.errors(include_url=False)) from None


def body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    _SCHEMAS[model.__name__] = model
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}
            },
        }
    }


def install_schemas(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _SCHEMAS.items():
            model_schema = model.model_json_schema(ref_template=_REF)
            components.update(model_schema.pop("$defs", {}))
            components[name] = model_schema
        app.openapi_schema = document(schema)  # error shapes and credentials, as served
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
