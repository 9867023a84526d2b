"""The first line: a repository call for tenant A never returns tenant B's rows, even in
a session scoped to A (so RLS would not hide a wrong filter's result here: the filter
itself is what is checked; tests/isolation/test_rls.py checks the second line)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import repositories
from polymodal.db.scope import system_session, tenant_session
from polymodal.tenancy import admin


async def _tenant(sessions: async_sessionmaker[AsyncSession], email: str) -> uuid.UUID:
    name = f"iso-{uuid.uuid4().hex[:8]}"
    tenant = await admin.create_tenant(sessions, name=name, actor="test")
    await admin.add_user(sessions, tenant=name, email=email, role="owner", actor="test")
    await admin.issue_key(sessions, tenant=name, email=email, actor="test", name=name)
    return tenant.id


async def test_repositories_filter_by_tenant(sessions: async_sessionmaker[AsyncSession]) -> None:
    shared_email = f"both-{uuid.uuid4().hex[:6]}@example.test"
    a = await _tenant(sessions, shared_email)
    b = await _tenant(sessions, shared_email)  # the same person, member of both

    async with tenant_session(sessions, b) as s:
        keys_b = await repositories.list_api_keys(s, tenant_id=b)
        assert keys_b and {k.tenant_id for k in keys_b} == {b}
    # A system session sees every tenant's rows, so only the repository filter stands
    # between tenant A and B's key here.
    async with system_session(sessions) as s:
        keys_a = await repositories.list_api_keys(s, tenant_id=a)
        assert keys_a and {k.tenant_id for k in keys_a} == {a}
        assert await repositories.get_api_key(s, tenant_id=a, key_id=keys_b[0].id) is None
        assert await repositories.get_api_key(s, tenant_id=b, key_id=keys_b[0].id) is not None

        audit_a = await repositories.list_audit(s, tenant_id=a)
        assert audit_a and {e.tenant_id for e in audit_a} == {a}

        members_a = await repositories.list_members(s, tenant_id=a)
        assert [u.email for u, _ in members_a] == [shared_email]

    # Revoking B's key through A changes nothing.
    async with system_session(sessions) as s, s.begin():
        assert not await repositories.revoke_api_key(
            s, tenant_id=a, key_id=keys_b[0].id, at=datetime.now(UTC)
        )
    async with tenant_session(sessions, b) as s:
        key = await repositories.get_api_key(s, tenant_id=b, key_id=keys_b[0].id)
        assert key is not None and key.revoked_at is None


async def test_audit_chain_links_each_event_to_the_previous(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id = await _tenant(sessions, f"chain-{uuid.uuid4().hex[:6]}@example.test")
    async with tenant_session(sessions, tenant_id) as s:
        events = list(reversed(await repositories.list_audit(s, tenant_id=tenant_id)))
    assert [e.action for e in events] == ["tenant.create", "member.add", "key.create"]
    assert events[0].prev_hash == repositories.GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
