"""Engine and session factory for both profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from polymodal.db.scope import ROLE_APPLIED, ROLE_CONFIGURED, TenantScopedSession
from polymodal.settings import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _switch_role(role: str) -> Any:
    """A connect hook: the new connection becomes ``role`` for its whole life, so
    Row-Level Security holds even when the URL's user is a superuser or the owner.

    Before the first `polymodal migrate` the role does not exist yet; the connection then
    stays the URL's user (migrations need exactly that) and is marked, and
    `polymodal.db.scope` refuses to open a tenant session on it."""
    quoted = '"' + role.replace('"', '""') + '"'

    async def apply(conn: Any) -> bool:
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if exists:
            # Outside any transaction, so a later ROLLBACK cannot undo it.
            await conn.execute(f"SET ROLE {quoted}")
        return bool(exists)

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        record.info[ROLE_CONFIGURED] = role  # "" = confinement switched off by settings
        record.info[ROLE_APPLIED] = bool(role) and dbapi_connection.run_async(apply)

    return on_connect


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url)
    if settings.is_sqlite:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": settings.database_connect_timeout_s}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    server_settings = {"application_name": "polymodal"}
    if settings.database_schema:
        server_settings["search_path"] = settings.database_schema
    engine = create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        pool_pre_ping=True,
        connect_args={
            "timeout": settings.database_connect_timeout_s,
            "server_settings": server_settings,
        },
    )
    event.listen(engine.sync_engine, "connect", _switch_role(settings.database_rls_role))
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=TenantScopedSession
    )
