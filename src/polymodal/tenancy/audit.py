"""The audit log: read it (paged, for admins) and verify its hash chain.

Each event's hash covers its fields and the previous event's hash; ``seq`` numbers a
tenant's events 1, 2, 3...; the tenant's head row names the last event. Verification
walks the chain in order and reports the first break:
- a changed row: its stored hash is not the hash of its fields (or, if the hash was
  recomputed too, the next event's ``prev_hash`` no longer matches);
- a deleted row: a gap in ``seq`` (and a ``prev_hash`` that matches nothing);
- deleted newest rows: the chain ends before the head.
A writer with full database access could rewrite the whole chain and its head; record
the head hash that `polymodal admin audit verify` prints somewhere else to catch that.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import audit as audit_db
from polymodal.db import system
from polymodal.db.repositories import GENESIS_HASH, audit_fields, audit_hash
from polymodal.db.scope import system_session, tenant_session
from polymodal.domain.errors import InvalidRequest, NotFound
from polymodal.domain.principal import Principal
from polymodal.tenancy.rbac import Permission, require

VERIFY_CHUNK = 1000
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    actor: str
    action: str
    target: str
    data: dict[str, Any]
    created_at: datetime
    hash: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEntry]
    next_before: int | None  # pass as ``before`` for the next (older) page


async def list_events(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    *,
    before: int | None,
    limit: int,
) -> AuditPage:
    require(principal, Permission.AUDIT_READ)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit: must be 1 to {MAX_PAGE}", code="invalid_limit")
    if before is not None and before < 1:
        raise InvalidRequest("before: must be a positive seq", code="invalid_cursor")
    async with tenant_session(sessions, principal.tenant_id) as session:
        rows = await audit_db.page(
            session, tenant_id=principal.tenant_id, before_seq=before, limit=limit
        )
    events = [
        AuditEntry(r.seq, r.actor, r.action, r.target, dict(r.data), r.created_at, r.hash)
        for r in rows
    ]
    more = len(events) == limit and events[-1].seq > 1
    return AuditPage(events, events[-1].seq if more else None)


@dataclass(frozen=True, slots=True)
class Verdict:
    tenant_id: uuid.UUID
    tenant: str
    events: int  # events checked before the first break (all of them when ok)
    head: str  # the hash of the last good event (genesis when empty)
    problem: str | None = None
    seq: int | None = None  # where the chain breaks

    @property
    def ok(self) -> bool:
        return self.problem is None


async def verify_tenant(
    sessions: async_sessionmaker[AsyncSession], *, tenant_id: uuid.UUID, name: str = ""
) -> Verdict:
    """Walk one tenant's chain in ``seq`` order and report the first break."""
    async with tenant_session(sessions, tenant_id) as session:
        return await _walk(session, tenant_id, name)


async def _walk(session: AsyncSession, tenant_id: uuid.UUID, name: str) -> Verdict:
    expected, prev, checked = 1, GENESIS_HASH, 0

    def broken(problem: str, seq: int) -> Verdict:
        return Verdict(tenant_id, name, checked, prev, problem, seq)

    while True:
        rows = await audit_db.run(
            session, tenant_id=tenant_id, after_seq=expected - 1, limit=VERIFY_CHUNK
        )
        for row in rows:
            if row.seq != expected:
                return broken(f"event {expected} is missing (deleted)", expected)
            if row.prev_hash != prev:
                return broken(
                    f"event {row.seq} (id {row.id}) does not follow event {row.seq - 1}: "
                    "an earlier event was changed or removed",
                    row.seq,
                )
            fields = audit_fields(
                tenant_id=row.tenant_id,
                actor=row.actor,
                action=row.action,
                target=row.target,
                data=row.data,
                created_at=row.created_at,
            )
            if audit_hash(row.prev_hash, fields) != row.hash:
                return broken(
                    f"event {row.seq} (id {row.id}) was modified: its contents do not match "
                    "its hash",
                    row.seq,
                )
            prev, expected, checked = row.hash, expected + 1, checked + 1
        if len(rows) < VERIFY_CHUNK:
            break
    head = await audit_db.head(session, tenant_id=tenant_id)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    if head_seq != checked or head_hash != prev:
        return broken(
            f"the chain ends at event {checked} but its head is event {head_seq}: "
            "the newest events were deleted (or the head was changed)",
            checked + 1,
        )
    return Verdict(tenant_id, name, checked, prev)


async def verify(
    sessions: async_sessionmaker[AsyncSession], *, tenant: str | None = None
) -> list[Verdict]:
    """Verify one tenant (by name or id) or every tenant (operator command)."""
    async with system_session(sessions) as session:
        if tenant is not None:
            found = await system.find_tenant(session, ref=tenant)
            if found is None:
                raise NotFound(f"no tenant {tenant!r}", code="tenant_not_found")
            targets = [(found.id, found.name)]
        else:
            targets = [(t.id, t.name) for t in await system.list_tenants(session)]
    return [await verify_tenant(sessions, tenant_id=tid, name=name) for tid, name in targets]
