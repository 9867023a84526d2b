"""JSON Schema -> Gemini ``Schema`` (the OpenAPI subset Gemini takes for ``responseSchema``
and function ``parameters``).

Keywords that only annotate are dropped; keywords that constrain and have no Gemini form
are refused with a `BadRequest` naming where they are, rather than silently loosening
the contract: ``$ref`` into ``$defs`` is inlined (not recursively), ``type: [X, "null"]``
and ``anyOf: [X, {"type": "null"}]`` become ``nullable``, ``const`` a one-value enum,
and ``additionalProperties: false`` is dropped (Gemini generates only declared
properties); a map (``additionalProperties: {...}``) cannot be expressed and is refused.
"""

from __future__ import annotations

from typing import Any

from polymodal.domain.errors import BadRequest

WIRE = "gemini"
_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
_FORMATS = frozenset({"date-time", "enum", "float", "double", "int32", "int64"})
_COPY = frozenset(
    {
        "description",
        "title",
        "nullable",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "pattern",
        "default",
        "example",
        "propertyOrdering",
        "required",
    }
)
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "strict",
    }
)


def _refuse(message: str) -> BadRequest:
    return BadRequest(message, provider=WIRE)


def convert(schema: Any, where: str) -> dict[str, Any]:
    """The Gemini form of ``schema``; ``where`` names it in errors (e.g. ``tools[0]...``)."""
    return _convert(schema, where, schema, ())


def _resolve(root: Any, ref: Any, where: str) -> Any:
    if isinstance(ref, str):
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix) and isinstance(root, dict):
                defs = root.get(prefix[2:-1])
                if isinstance(defs, dict) and ref[len(prefix) :] in defs:
                    return defs[ref[len(prefix) :]]
    raise _refuse(f"{where}.$ref: only references into $defs can be inlined for gemini")


def _convert(schema: Any, where: str, root: Any, seen: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise _refuse(f"{where}: expected a JSON schema object")
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref in seen:
            raise _refuse(f"{where}.$ref: recursive schemas cannot be expressed for gemini")
        target = _resolve(root, ref, where)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _convert({**target, **rest}, where, root, (*seen, str(ref)))
    out: dict[str, Any] = {}
    for key, value in schema.items():
        path = f"{where}.{key}"
        if key == "type":
            types = [value] if isinstance(value, str) else value
            if not isinstance(types, list):
                raise _refuse(f"{path}: expected a type name or a list of them")
            if "null" in types:
                out["nullable"] = True
                types = [t for t in types if t != "null"]
            if len(types) != 1 or types[0] not in _TYPES:
                raise _refuse(f"{path}: gemini needs exactly one of {', '.join(_TYPES)}")
            out["type"] = _TYPES[types[0]]
        elif key == "properties":
            if not isinstance(value, dict):
                raise _refuse(f"{path}: expected an object")
            out[key] = {
                name: _convert(sub, f"{path}.{name}", root, seen) for name, sub in value.items()
            }
        elif key == "items":
            out[key] = _convert(value, path, root, seen)
        elif key in ("anyOf", "oneOf"):
            if not isinstance(value, list) or not value:
                raise _refuse(f"{path}: expected a non-empty list")
            branches: list[dict[str, Any]] = []
            for k, sub in enumerate(value):
                if sub == {"type": "null"}:
                    out["nullable"] = True
                else:
                    branches.append(_convert(sub, f"{path}[{k}]", root, seen))
            if len(branches) == 1:
                out.update(branches[0])
            elif branches:
                out["anyOf"] = branches
        elif key == "allOf":
            if not isinstance(value, list) or len(value) != 1:
                raise _refuse(f"{path}: gemini takes allOf only with a single schema")
            out.update(_convert(value[0], f"{path}[0]", root, seen))
        elif key in ("enum", "const"):
            values = value if key == "enum" else [value]
            if not isinstance(values, list):
                raise _refuse(f"{path}: expected a list")
            if None in values:
                out["nullable"] = True
                values = [v for v in values if v is not None]
            if not all(isinstance(v, str) for v in values):
                raise _refuse(f"{path}: gemini enumerations hold strings only")
            out["enum"] = values
            out.setdefault("type", "STRING")
        elif key == "additionalProperties":
            if not isinstance(value, bool):
                raise _refuse(f"{path}: gemini schemas cannot describe maps")
        elif key == "format":
            if value in _FORMATS:
                out[key] = value
        elif key in _COPY:
            out[key] = value
        elif key not in _ANNOTATIONS:
            raise _refuse(f"{path}: not supported in gemini schemas")
    return out
