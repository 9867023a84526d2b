"""Content templates: browse and search the catalog in 11 languages, render a prompt,
generate (sync or streamed), and manage the tenant's own templates.

Routes under ``/v1/templates/custom`` are declared before ``/v1/templates/{id}`` so the
literal segment wins; ``custom`` is a reserved template id.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.api.responses import JSONResponse
from polymodal.api.v1.callers import GatewayCaller
from polymodal.api.v1.openai_compat import SSE_HEADERS, _route_headers, _sse
from polymodal.domain.errors import ValidationFailed
from polymodal.domain.principal import Principal
from polymodal.templates.generation import Options
from polymodal.templates.inputs import check_language
from polymodal.templates.prompting import Rendered, VoiceRequest
from polymodal.templates.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, CustomRecord
from polymodal.templates.views import DEFAULT_LANGUAGE, negotiate

router = APIRouter(prefix="/v1/templates", tags=["templates"])

AcceptLanguage = Annotated[str | None, Header(alias="accept-language")]


def _caller(request: Request, principal: Principal, state: State) -> GatewayCaller:
    return GatewayCaller.of(request, principal, state)


def _ui_lang(accept_language: str | None) -> str:
    return negotiate(accept_language) or DEFAULT_LANGUAGE


def _display_lang(lang: str | None, accept_language: str | None) -> str:
    ui = _ui_lang(accept_language)
    return check_language(lang, ui_lang=ui) if lang else ui


# --- request bodies --------------------------------------------------------------------------


class TemplateInputsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    inputs: dict[str, Any] = Field(default_factory=dict, description="Field name -> value.")
    lang: str | None = Field(
        default=None,
        max_length=16,
        description="Output language; omitted: the language the inputs are written in.",
    )
    locale: str | None = Field(default=None, max_length=16, description="e.g. es-MX, pt-BR.")
    register_: str | None = Field(
        default=None,
        alias="register",
        max_length=32,
        description="e.g. formal or informal (tu/vous, du/Sie); see the template's registers.",
    )

    def voice(self) -> VoiceRequest:
        return VoiceRequest(lang=self.lang, locale=self.locale, register=self.register_)


class GenerateIn(TemplateInputsIn):
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A deployment or tier:<tier>; omitted: the template's tier.",
    )
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)


class CustomTemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: dict[str, Any] = Field(
        description="The definition, in the shape of a built-in catalog file (as JSON)."
    )
    override: bool = Field(
        default=False, description="Replace the built-in template of the same id for this tenant."
    )


class CustomTemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: dict[str, Any]


# --- response shapes ---------------------------------------------------------------------------


def _custom_public(record: CustomRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "template.custom",
        "version": record.version,
        "latest_version": record.latest_version,
        "overrides_builtin": record.overrides_builtin,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "version_created_at": record.version_created_at.isoformat(),
        "created_by": str(record.created_by) if record.created_by else None,
        "template": record.definition,
    }


def _custom_response(record: CustomRecord, *, status_code: int = 200) -> JSONResponse:
    # The ETag names the version shown; If-Match on an update must name the latest.
    etag = f'"v{record.version}"'
    return JSONResponse(_custom_public(record), status_code=status_code, headers={"ETag": etag})


def _version_of_etag(if_match: str | None) -> int | None:
    """The version an ``If-Match`` header names (``"v3"``, ``W/"v3"`` or ``3``)."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"').removeprefix("v")
    if not tag.isdigit():
        raise ValidationFailed(
            f'If-Match: expected an ETag like "v3" from this template, got {if_match!r}',
            param="If-Match",
        )
    return int(tag)


def _voice_public(rendered: Rendered) -> dict[str, Any]:
    t = rendered.template
    return {
        "template": {"id": t.id, "version": t.version, "source": rendered.entry.source},
        "lang": rendered.voice.lang,
        "lang_detected_from_inputs": rendered.lang_detected,
        "locale": rendered.voice.locale,
        "register": rendered.voice.register,
        "direction": rendered.voice.style.direction,
        "format": t.output.format,
        "disclaimer": rendered.disclaimer,
    }


# --- custom templates --------------------------------------------------------------------------


@router.get("/custom")
async def list_custom(principal: CurrentPrincipal, state: State) -> JSONResponse:
    """This tenant's templates (latest versions) and the built-ins it hides."""
    listing = await state.templates.list_custom(principal)
    return JSONResponse(
        {
            "object": "list",
            "data": [_custom_public(r) for r in listing.templates],
            "hidden": listing.hidden,
        }
    )


@router.post("/custom", status_code=201)
async def create_custom(
    body: CustomTemplateCreate, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    """Create a template (version 1), validated like the built-ins plus a sandbox check."""
    record = await state.templates.create_custom(principal, body.template, override=body.override)
    return _custom_response(record, status_code=201)


@router.get("/custom/{template_id}")
async def get_custom(
    template_id: str,
    principal: CurrentPrincipal,
    state: State,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,  # an INTEGER column
) -> JSONResponse:
    """The latest version, or ``?version=N``."""
    record = await state.templates.get_custom(principal, template_id, version=version)
    return _custom_response(record)


@router.get("/custom/{template_id}/versions")
async def custom_versions(
    template_id: str, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    versions = await state.templates.custom_versions(principal, template_id)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "version": v.version,
                    "created_at": v.created_at.isoformat(),
                    "created_by": str(v.created_by) if v.created_by else None,
                }
                for v in versions
            ],
        }
    )


@router.put("/custom/{template_id}")
async def update_custom(
    template_id: str,
    body: CustomTemplateUpdate,
    principal: CurrentPrincipal,
    state: State,
    if_match: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Save a new version; earlier versions stay readable. Send the ``ETag`` of the
    version you edited as ``If-Match`` to refuse (412) a save over someone else's."""
    record = await state.templates.update_custom(
        principal, template_id, body.template, if_version=_version_of_etag(if_match)
    )
    return _custom_response(record)


@router.delete("/custom/{template_id}", status_code=204)
async def delete_custom(template_id: str, principal: CurrentPrincipal, state: State) -> Response:
    """Delete the template and all its versions (an overridden built-in comes back)."""
    await state.templates.delete_custom(principal, template_id)
    return Response(status_code=204)


@router.put("/{template_id}/hidden", status_code=204)
async def hide(template_id: str, principal: CurrentPrincipal, state: State) -> Response:
    """Hide a built-in template from this tenant."""
    await state.templates.set_hidden(principal, template_id, hidden=True)
    return Response(status_code=204)


@router.delete("/{template_id}/hidden", status_code=204)
async def unhide(template_id: str, principal: CurrentPrincipal, state: State) -> Response:
    """Show a hidden built-in template again."""
    await state.templates.set_hidden(principal, template_id, hidden=False)
    return Response(status_code=204)


# --- the catalog ---------------------------------------------------------------------------------


@router.get("")
async def list_templates(
    principal: CurrentPrincipal,
    state: State,
    accept_language: AcceptLanguage = None,
    category: str | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    lang: Annotated[str | None, Query(max_length=16)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Full-text search.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JSONResponse:
    """Templates this tenant can use, localized (``lang`` or ``Accept-Language``)."""
    display = _display_lang(lang, accept_language)
    page = await state.templates.browse(
        principal, lang=display, category=category, tag=tag, q=q, limit=limit, offset=offset
    )
    return JSONResponse(
        {
            "object": "list",
            "data": page.items,
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
            "lang": display,
        },
        headers={"content-language": display},
    )


@router.get("/{template_id}")
async def get_template(
    template_id: str,
    principal: CurrentPrincipal,
    state: State,
    accept_language: AcceptLanguage = None,
    lang: Annotated[str | None, Query(max_length=16)] = None,
) -> JSONResponse:
    """One template with its form, localized (``lang`` or ``Accept-Language``)."""
    display = _display_lang(lang, accept_language)
    view = await state.templates.describe(principal, template_id, lang=display)
    return JSONResponse(view, headers={"content-language": display})


@router.post("/{template_id}/render")
async def render_template(
    template_id: str,
    body: TemplateInputsIn,
    principal: CurrentPrincipal,
    state: State,
    accept_language: AcceptLanguage = None,
) -> JSONResponse:
    """The final system prompt and prompt for these inputs; no model call."""
    rendered = await state.templates.render(
        principal,
        template_id,
        inputs=body.inputs,
        voice=body.voice(),
        ui_lang=_ui_lang(accept_language),
    )
    return JSONResponse(
        {
            "object": "template.render",
            **_voice_public(rendered),
            "system": rendered.system,
            "prompt": rendered.prompt(),
            "messages": rendered.messages(),
            "json_schema": rendered.template.output.json_schema,
        }
    )


@router.post("/{template_id}/generate", response_model=None)
async def generate(
    template_id: str,
    body: GenerateIn,
    request: Request,
    principal: CurrentPrincipal,
    state: State,
    accept_language: AcceptLanguage = None,
) -> JSONResponse | StreamingResponse:
    """Generate the piece (``stream: true`` for SSE chunks like the chat endpoint)."""
    options = Options(model=body.model, max_tokens=body.max_tokens, temperature=body.temperature)
    caller = _caller(request, principal, state)
    ui_lang = _ui_lang(accept_language)
    if body.stream:
        rendered, stream, routed, info = await state.templates.generate_stream(
            principal,
            template_id,
            inputs=body.inputs,
            voice=body.voice(),
            ui_lang=ui_lang,
            options=options,
            caller=caller,
        )
        return StreamingResponse(
            _sse(stream, include_usage=False),
            media_type="text/event-stream",
            headers={
                **SSE_HEADERS,
                **_route_headers(routed),
                **caller.limit_headers(),
                "content-language": rendered.voice.lang,
                "x-polymodal-language-retry": "1" if info.language_retry else "0",
            },
        )
    rendered, done = await state.templates.generate(
        principal,
        template_id,
        inputs=body.inputs,
        voice=body.voice(),
        ui_lang=ui_lang,
        options=options,
        caller=caller,
    )
    return JSONResponse(
        {
            "id": f"tmplgen-{uuid.uuid4().hex}",
            "object": "template.generation",
            "created": int(time.time()),
            **_voice_public(rendered),
            "output": done.output,
            "json": done.document,
            "model": done.model,
            "usage": done.usage,
            "finish_reason": done.finish_reason,
            "output_language": done.output_language,
            "language_retry": done.language_retry,
            "json_repaired": done.json_repaired,
            "calls": done.calls,
        },
        headers={
            **_route_headers(done.routed),
            **caller.limit_headers(),
            "content-language": rendered.voice.lang,
        },
    )
