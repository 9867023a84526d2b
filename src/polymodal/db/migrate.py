"""Run Alembic migrations programmatically, on a connection from our own engine.

Pooled PostgreSQL connections run as the confined application role (see
`polymodal.db.engine`); a migration switches back to the URL's own user for its
transaction (``SET LOCAL ROLE NONE``), since it creates tables, policies and the role.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from polymodal.db.rls import DEFAULT_APP_ROLE
from polymodal.db.scope import ROLE_APPLIED, ROLE_CONFIGURED

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    # The role migration 0008 creates and grants: the one the engine switches to.
    cfg.attributes["rls_role"] = connection.info.get(ROLE_CONFIGURED, DEFAULT_APP_ROLE)
    return cfg


async def _as_owner(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET LOCAL ROLE NONE"))


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        await _as_owner(conn)
        await conn.run_sync(lambda c: command.upgrade(_config(c), revision))
        info = await conn.get_raw_connection()
        unconfined = bool(info.info.get(ROLE_CONFIGURED)) and not info.info.get(ROLE_APPLIED)
    if unconfined:
        # This connection predates the role the migration just created: drop the pool so
        # every connection from now on switches to it.
        await engine.dispose()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await _as_owner(conn)
        await conn.run_sync(lambda c: command.downgrade(_config(c), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.begin() as conn:
        await _as_owner(conn)
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
