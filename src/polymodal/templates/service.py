"""The template service: what a tenant sees of the catalog (built-ins, minus the ones it
hid, with its own templates and overrides), localized listing and search, rendering,
generation, and the tenant's custom templates with their versions."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import repositories
from polymodal.db import templates as repo
from polymodal.db.models import CustomTemplate, CustomTemplateVersion, utcnow
from polymodal.db.scope import tenant_session
from polymodal.domain.chat import ChatChunk
from polymodal.domain.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from polymodal.domain.principal import Principal
from polymodal.observability.metrics import TemplateMetrics
from polymodal.templates import generation, search, views
from polymodal.templates.catalog import Catalog, Entry
from polymodal.templates.definitions import RESERVED_IDS, validate_definition
from polymodal.templates.generation import ChatCaller, Generation, Options, StreamInfo
from polymodal.templates.inputs import check_language, input_text, validate_inputs
from polymodal.templates.prompting import Rendered, VoiceRequest, render, resolve_voice
from polymodal.templates.schema import CATEGORIES, Template
from polymodal.tenancy.rbac import Permission, require

R = TypeVar("R")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
PARSED_CUSTOM_CACHE = 2048  # parsed custom template versions kept (versions never change)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class CustomRecord:
    id: str
    version: int
    latest_version: int
    overrides_builtin: bool
    created_at: datetime
    updated_at: datetime
    version_created_at: datetime
    created_by: uuid.UUID | None
    definition: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CustomListing:
    templates: list[CustomRecord]
    hidden: list[str]


def _record(t: CustomTemplate, v: CustomTemplateVersion) -> CustomRecord:
    return CustomRecord(
        id=t.template_id,
        version=v.version,
        latest_version=t.latest_version,
        overrides_builtin=t.overrides_builtin,
        created_at=t.created_at,
        updated_at=t.updated_at,
        version_created_at=v.created_at,
        created_by=v.created_by,
        definition=v.definition,
    )


def _not_found(template_id: str) -> NotFound:
    return NotFound(f"template '{template_id}' does not exist.", code="template_not_found")


class TemplateService:
    def __init__(
        self,
        *,
        catalog: Catalog,
        sessions: async_sessionmaker[AsyncSession],
        metrics: TemplateMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.catalog = catalog
        self._sessions = sessions
        self._metrics = metrics
        self._clock = clock
        self._parsed: OrderedDict[tuple[uuid.UUID, int], Entry] = OrderedDict()

    # --- what a tenant sees -------------------------------------------------------------------

    def _custom_entry(self, tenant_id: uuid.UUID, v: CustomTemplateVersion) -> Entry:
        key = (tenant_id, v.id)
        entry = self._parsed.get(key)
        if entry is None:
            # Checked in full when saved; only the shape is re-read here.
            entry = Entry.of(Template.model_validate(v.definition), "custom")
            self._parsed[key] = entry
            while len(self._parsed) > PARSED_CUSTOM_CACHE:
                self._parsed.popitem(last=False)
        return entry

    async def _visible(self, tenant_id: uuid.UUID) -> list[Entry]:
        async with tenant_session(self._sessions, tenant_id) as session:
            customs = await repo.list_latest_custom(session, tenant_id=tenant_id)
            hidden = await repo.hidden_ids(session, tenant_id=tenant_id)
        own = {t.template_id: self._custom_entry(tenant_id, v) for t, v in customs}
        entries = [e for e in self.catalog if e.id not in hidden and e.id not in own]
        entries += own.values()
        order = {c: i for i, c in enumerate(CATEGORIES)}
        return sorted(entries, key=lambda e: (order[e.template.category], e.id))

    async def _find(self, tenant_id: uuid.UUID, template_id: str) -> Entry:
        async with tenant_session(self._sessions, tenant_id) as session:
            found = await repo.get_custom_version(
                session, tenant_id=tenant_id, template_id=template_id
            )
            if found is not None:
                return self._custom_entry(tenant_id, found[1])
            builtin = self.catalog.get(template_id)
            if builtin is None or await repo.is_hidden(
                session, tenant_id=tenant_id, template_id=template_id
            ):
                raise _not_found(template_id)
            return builtin

    # --- reading ---------------------------------------------------------------------------------

    async def browse(
        self,
        principal: Principal,
        *,
        lang: str,
        category: str | None = None,
        tag: str | None = None,
        q: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
    ) -> Page:
        if category is not None and category not in CATEGORIES:
            raise ValidationFailed(
                f"category: unknown category '{category}'; use one of {', '.join(CATEGORIES)}.",
                param="category",
                code="unknown_category",
            )
        require(principal, Permission.TEMPLATES_READ)
        entries = [
            e
            for e in await self._visible(principal.tenant_id)
            if (category is None or e.template.category == category)
            and (tag is None or tag in e.template.tags)
        ]
        if q and (query := search.terms(q)):
            scored = [(search.score(e.doc, query, lang), i, e) for i, e in enumerate(entries)]
            entries = [e for s, _, e in sorted((-s, i, e) for s, i, e in scored if s > 0)]
        page = entries[offset : offset + limit]
        return Page([views.summary(e, lang) for e in page], len(entries), limit, offset)

    async def describe(
        self, principal: Principal, template_id: str, *, lang: str
    ) -> dict[str, Any]:
        require(principal, Permission.TEMPLATES_READ)
        entry = await self._find(principal.tenant_id, template_id)
        return views.detail(entry, lang, self.catalog.styles[lang])

    async def render(
        self,
        principal: Principal,
        template_id: str,
        *,
        inputs: Mapping[str, Any],
        voice: VoiceRequest,
        ui_lang: str,
    ) -> Rendered:
        """The final prompt: inputs checked (errors in ``voice.lang`` or ``ui_lang``), the
        output voice resolved, the style guide applied. No model call."""
        require(principal, Permission.TEMPLATES_READ)
        entry = await self._find(principal.tenant_id, template_id)
        messages_lang = check_language(voice.lang, ui_lang=ui_lang) if voice.lang else ui_lang
        context = validate_inputs(entry.template, inputs, messages_lang)
        resolved, detected = resolve_voice(
            self.catalog,
            voice,
            ui_lang=messages_lang,
            input_text=input_text(entry.template, context),
        )
        return render(entry, context, resolved, lang_detected=detected)

    async def generate(
        self,
        principal: Principal,
        template_id: str,
        *,
        inputs: Mapping[str, Any],
        voice: VoiceRequest,
        ui_lang: str,
        options: Options,
        caller: ChatCaller[R],
    ) -> tuple[Rendered, Generation[R]]:
        rendered = await self.render(
            principal, template_id, inputs=inputs, voice=voice, ui_lang=ui_lang
        )
        return rendered, await generation.generate(rendered, caller, options, self._metrics)

    async def generate_stream(
        self,
        principal: Principal,
        template_id: str,
        *,
        inputs: Mapping[str, Any],
        voice: VoiceRequest,
        ui_lang: str,
        options: Options,
        caller: ChatCaller[R],
    ) -> tuple[Rendered, AsyncIterator[ChatChunk], R, StreamInfo]:
        rendered = await self.render(
            principal, template_id, inputs=inputs, voice=voice, ui_lang=ui_lang
        )
        stream, routed, info = await generation.generate_stream(
            rendered, caller, options, self._metrics
        )
        return rendered, stream, routed, info

    # --- custom templates ------------------------------------------------------------------

    @staticmethod
    def _require_editor(principal: Principal) -> None:
        require(principal, Permission.TEMPLATES_WRITE)

    async def _audit(
        self, session: AsyncSession, principal: Principal, action: str, target: str, **data: Any
    ) -> None:
        await repositories.append_audit(
            session,
            tenant_id=principal.tenant_id,
            actor=f"user:{principal.user_id}",
            action=action,
            target=target,
            data=data,
            at=self._clock(),
        )

    def _checked(self, definition: Mapping[str, Any], *, template_id: str | None) -> Template:
        data = dict(definition)
        if template_id is not None:
            data.setdefault("id", template_id)
            if data["id"] != template_id:
                raise ValidationFailed(
                    f"template.id: '{data['id']}' differs from the id in the path "
                    f"('{template_id}'); ids cannot change.",
                    param="template.id",
                    code="invalid_template",
                )
        data["version"] = 1  # numbered by the server; the stored copy gets the real one
        template = validate_definition(data)
        if template.id in RESERVED_IDS:
            raise ValidationFailed(
                f"template.id: '{template.id}' is reserved.",
                param="template.id",
                code="invalid_template",
            )
        return template

    async def create_custom(
        self, principal: Principal, definition: Mapping[str, Any], *, override: bool = False
    ) -> CustomRecord:
        self._require_editor(principal)
        template = self._checked(definition, template_id=None)
        builtin = self.catalog.get(template.id) is not None
        if builtin and not override:
            raise Conflict(
                f"template.id: '{template.id}' is a built-in template; send override: true "
                "to replace it for this tenant.",
                code="builtin_template",
            )
        if override and not builtin:
            raise ValidationFailed(
                f"override: '{template.id}' is not a built-in template.",
                param="override",
                code="not_builtin",
            )
        stored = template.model_dump(mode="json", by_alias=True)
        try:
            async with (
                tenant_session(self._sessions, principal.tenant_id) as session,
                session.begin(),
            ):
                exists = await repo.find_custom(
                    session, tenant_id=principal.tenant_id, template_id=template.id
                )
                if exists is not None:
                    raise _exists(template.id)
                t, v = await repo.create_custom(
                    session,
                    tenant_id=principal.tenant_id,
                    template_id=template.id,
                    definition=stored,
                    overrides_builtin=builtin,
                    created_by=principal.user_id,
                    at=self._clock(),
                )
                await self._audit(session, principal, "template.create", template.id, version=1)
        except IntegrityError as e:  # a concurrent create of the same id
            raise _exists(template.id) from e
        return _record(t, v)

    async def update_custom(
        self,
        principal: Principal,
        template_id: str,
        definition: Mapping[str, Any],
        *,
        if_version: int | None = None,
    ) -> CustomRecord:
        """Save a new version (the previous ones stay readable).

        ``if_version`` (from ``If-Match``) makes the update optimistic: when another
        editor saved a newer version since the caller read ``if_version``, nothing is
        written and ``PreconditionFailed`` names the current version."""
        self._require_editor(principal)
        template = self._checked(definition, template_id=template_id)
        try:
            async with (
                tenant_session(self._sessions, principal.tenant_id) as session,
                session.begin(),
            ):
                t = await repo.find_custom(
                    session, tenant_id=principal.tenant_id, template_id=template_id, for_update=True
                )
                if t is None:
                    raise _not_found(template_id)
                if if_version is not None and if_version != t.latest_version:
                    raise PreconditionFailed(
                        f"template '{template_id}' is at version {t.latest_version}, not "
                        f"{if_version}: fetch it again and reapply your change.",
                        code="version_mismatch",
                    )
                stored = template.model_copy(update={"version": t.latest_version + 1})
                v = await repo.add_custom_version(
                    session,
                    tenant_id=principal.tenant_id,
                    template=t,
                    definition=stored.model_dump(mode="json", by_alias=True),
                    created_by=principal.user_id,
                    at=self._clock(),
                )
                await self._audit(
                    session, principal, "template.update", template_id, version=v.version
                )
        except IntegrityError as e:  # a concurrent update took this version number
            raise Conflict(
                f"template '{template_id}' was changed concurrently; retry.",
                code="concurrent_update",
            ) from e
        return _record(t, v)

    async def delete_custom(self, principal: Principal, template_id: str) -> None:
        self._require_editor(principal)
        async with tenant_session(self._sessions, principal.tenant_id) as session, session.begin():
            if not await repo.delete_custom(
                session, tenant_id=principal.tenant_id, template_id=template_id
            ):
                raise _not_found(template_id)
            await self._audit(session, principal, "template.delete", template_id)

    async def get_custom(
        self, principal: Principal, template_id: str, *, version: int | None = None
    ) -> CustomRecord:
        async with tenant_session(self._sessions, principal.tenant_id) as session:
            found = await repo.get_custom_version(
                session, tenant_id=principal.tenant_id, template_id=template_id, version=version
            )
        if found is None:
            if version is not None:
                raise NotFound(
                    f"template '{template_id}' has no version {version}.",
                    code="template_version_not_found",
                )
            raise _not_found(template_id)
        return _record(*found)

    async def custom_versions(
        self, principal: Principal, template_id: str
    ) -> list[CustomTemplateVersion]:
        async with tenant_session(self._sessions, principal.tenant_id) as session:
            versions = await repo.list_custom_versions(
                session, tenant_id=principal.tenant_id, template_id=template_id
            )
        if not versions:
            raise _not_found(template_id)
        return versions

    async def list_custom(self, principal: Principal) -> CustomListing:
        async with tenant_session(self._sessions, principal.tenant_id) as session:
            rows = await repo.list_latest_custom(session, tenant_id=principal.tenant_id)
            hidden = await repo.hidden_ids(session, tenant_id=principal.tenant_id)
        return CustomListing([_record(t, v) for t, v in rows], sorted(hidden))

    async def set_hidden(self, principal: Principal, template_id: str, *, hidden: bool) -> None:
        """Hide a built-in template from this tenant, or show it again."""
        self._require_editor(principal)
        if self.catalog.get(template_id) is None:
            raise NotFound(
                f"template '{template_id}' is not a built-in template.", code="template_not_found"
            )
        async with tenant_session(self._sessions, principal.tenant_id) as session, session.begin():
            if hidden:
                changed = await repo.hide(
                    session,
                    tenant_id=principal.tenant_id,
                    template_id=template_id,
                    created_by=principal.user_id,
                    at=self._clock(),
                )
            else:
                changed = await repo.unhide(
                    session, tenant_id=principal.tenant_id, template_id=template_id
                )
            if changed:
                action = "template.hide" if hidden else "template.unhide"
                await self._audit(session, principal, action, template_id)


def _exists(template_id: str) -> Conflict:
    return Conflict(
        f"template.id: '{template_id}' already exists; update it with "
        f"PUT /v1/templates/custom/{template_id}.",
        code="template_exists",
    )
