"""Tenant custom templates and hidden built-ins. ``tenant_id`` is a required keyword of
every function; functions take an open session and never commit (the service owns the
transaction)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.models import CustomTemplate, CustomTemplateVersion, HiddenTemplate

# --- custom templates -----------------------------------------------------------------------


async def find_custom(
    session: AsyncSession, *, tenant_id: uuid.UUID, template_id: str, for_update: bool = False
) -> CustomTemplate | None:
    query = select(CustomTemplate).where(
        CustomTemplate.tenant_id == tenant_id, CustomTemplate.template_id == template_id
    )
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def get_custom_version(
    session: AsyncSession, *, tenant_id: uuid.UUID, template_id: str, version: int | None = None
) -> tuple[CustomTemplate, CustomTemplateVersion] | None:
    """A version of the tenant's template (the latest when ``version`` is None)."""
    wanted = CustomTemplate.latest_version if version is None else version
    result = await session.execute(
        select(CustomTemplate, CustomTemplateVersion)
        .join(
            CustomTemplateVersion,
            and_(
                CustomTemplateVersion.custom_template_id == CustomTemplate.id,
                CustomTemplateVersion.version == wanted,
            ),
        )
        .where(
            CustomTemplate.tenant_id == tenant_id,
            CustomTemplateVersion.tenant_id == tenant_id,
            CustomTemplate.template_id == template_id,
        )
    )
    row = result.one_or_none()
    return None if row is None else (row[0], row[1])


async def list_latest_custom(
    session: AsyncSession, *, tenant_id: uuid.UUID
) -> list[tuple[CustomTemplate, CustomTemplateVersion]]:
    result = await session.execute(
        select(CustomTemplate, CustomTemplateVersion)
        .join(
            CustomTemplateVersion,
            and_(
                CustomTemplateVersion.custom_template_id == CustomTemplate.id,
                CustomTemplateVersion.version == CustomTemplate.latest_version,
            ),
        )
        .where(CustomTemplate.tenant_id == tenant_id, CustomTemplateVersion.tenant_id == tenant_id)
        .order_by(CustomTemplate.template_id)
    )
    return [(t, v) for t, v in result.all()]


async def list_custom_versions(
    session: AsyncSession, *, tenant_id: uuid.UUID, template_id: str
) -> list[CustomTemplateVersion]:
    result = await session.execute(
        select(CustomTemplateVersion)
        .join(CustomTemplate, CustomTemplate.id == CustomTemplateVersion.custom_template_id)
        .where(
            CustomTemplate.tenant_id == tenant_id,
            CustomTemplateVersion.tenant_id == tenant_id,
            CustomTemplate.template_id == template_id,
        )
        .order_by(CustomTemplateVersion.version)
    )
    return list(result.scalars())


async def create_custom(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    template_id: str,
    definition: dict[str, Any],
    overrides_builtin: bool,
    created_by: uuid.UUID | None,
    at: datetime,
) -> tuple[CustomTemplate, CustomTemplateVersion]:
    template = CustomTemplate(
        tenant_id=tenant_id,
        template_id=template_id,
        latest_version=1,
        overrides_builtin=overrides_builtin,
        created_at=at,
        updated_at=at,
    )
    session.add(template)
    await session.flush()
    version = CustomTemplateVersion(
        custom_template_id=template.id,
        tenant_id=tenant_id,
        version=1,
        definition=definition,
        created_by=created_by,
        created_at=at,
    )
    session.add(version)
    await session.flush()
    return template, version


async def add_custom_version(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    template: CustomTemplate,
    definition: dict[str, Any],
    created_by: uuid.UUID | None,
    at: datetime,
) -> CustomTemplateVersion:
    """Append the next version to ``template`` (found with ``for_update=True``)."""
    if template.tenant_id != tenant_id:
        raise ValueError("template belongs to another tenant")
    template.latest_version += 1
    template.updated_at = at
    version = CustomTemplateVersion(
        custom_template_id=template.id,
        tenant_id=tenant_id,
        version=template.latest_version,
        definition=definition,
        created_by=created_by,
        created_at=at,
    )
    session.add(version)
    await session.flush()
    return version


async def delete_custom(session: AsyncSession, *, tenant_id: uuid.UUID, template_id: str) -> bool:
    """Delete the template and all its versions; False when the tenant has no such one."""
    template = await find_custom(session, tenant_id=tenant_id, template_id=template_id)
    if template is None:
        return False
    await session.execute(
        delete(CustomTemplateVersion).where(
            CustomTemplateVersion.tenant_id == tenant_id,
            CustomTemplateVersion.custom_template_id == template.id,
        )
    )
    await session.execute(
        delete(CustomTemplate).where(
            CustomTemplate.tenant_id == tenant_id, CustomTemplate.id == template.id
        )
    )
    return True


# --- hidden built-ins -------------------------------------------------------------------------


async def hidden_ids(session: AsyncSession, *, tenant_id: uuid.UUID) -> set[str]:
    result = await session.execute(
        select(HiddenTemplate.template_id).where(HiddenTemplate.tenant_id == tenant_id)
    )
    return set(result.scalars())


async def is_hidden(session: AsyncSession, *, tenant_id: uuid.UUID, template_id: str) -> bool:
    result = await session.execute(
        select(HiddenTemplate.id).where(
            HiddenTemplate.tenant_id == tenant_id, HiddenTemplate.template_id == template_id
        )
    )
    return result.scalar_one_or_none() is not None


async def hide(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    template_id: str,
    created_by: uuid.UUID | None,
    at: datetime,
) -> bool:
    """Hide a built-in for the tenant; False when it already was."""
    if await is_hidden(session, tenant_id=tenant_id, template_id=template_id):
        return False
    session.add(
        HiddenTemplate(
            tenant_id=tenant_id, template_id=template_id, created_by=created_by, created_at=at
        )
    )
    await session.flush()
    return True


async def unhide(session: AsyncSession, *, tenant_id: uuid.UUID, template_id: str) -> bool:
    result = await session.execute(
        delete(HiddenTemplate).where(
            HiddenTemplate.tenant_id == tenant_id, HiddenTemplate.template_id == template_id
        )
    )
    return bool(getattr(result, "rowcount", 0))
