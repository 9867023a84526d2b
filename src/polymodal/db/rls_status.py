"""Whether Row-Level Security actually holds on this database (for `polymodal doctor`).

Three things must be true on PostgreSQL: pooled connections run as the application role
and that role cannot bypass RLS; the URL's own user *can* (it serves the pre-tenant
lookups of `polymodal.db.scope.system_session`, such as finding an API key by its
prefix, which would otherwise find nothing); and every tenant table has RLS forced.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from polymodal.db.scope import ROLE_CONFIGURED

_ROLES = text(
    "SELECT current_user, session_user, "
    "  (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user), "
    "  (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = session_user)"
)
_UNFORCED = text(
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
    "  AND NOT (c.relrowsecurity AND c.relforcerowsecurity) "
    "  AND (c.relname = 'tenants' OR EXISTS (SELECT 1 FROM information_schema.columns k "
    "       WHERE k.table_schema = n.nspname AND k.table_name = c.relname "
    "         AND k.column_name = 'tenant_id')) "
    "ORDER BY c.relname"
)


class IsolationProblem(Exception):
    """RLS does not hold here; the message says why and what to do."""


async def describe(engine: AsyncEngine) -> str:
    if engine.dialect.name != "postgresql":
        return "not used on SQLite (one process; repository filters only)"
    async with engine.connect() as conn:
        current, session, app_bypasses, owner_bypasses = (await conn.execute(_ROLES)).one()
        role = (await conn.get_raw_connection()).info.get(ROLE_CONFIGURED)
        unforced = [str(r[0]) for r in await conn.execute(_UNFORCED)]
    if role and current != role:
        raise IsolationProblem(f"role {role!r} is missing: run `polymodal migrate`")
    if not role:
        return f"POLYMODAL_DATABASE_RLS_ROLE is empty: queries run as {current}, unconfined"
    if app_bypasses:
        raise IsolationProblem(f"role {current!r} can bypass row-level security")
    if not owner_bypasses:
        raise IsolationProblem(
            f"the database URL's user {session!r} cannot bypass row-level security, so "
            "pre-tenant lookups (API keys by prefix) find nothing: grant it BYPASSRLS"
        )
    if unforced:
        raise IsolationProblem(f"tenant tables without forced RLS: {', '.join(unforced)}")
    return f"queries run as {current} (RLS enforced); system lookups as {session}"
