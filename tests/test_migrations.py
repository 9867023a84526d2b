"""Migrations upgrade and downgrade cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect

from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine
from tests.conftest import DatabaseTarget

FOUNDATION_TABLES = {"tenants", "users", "memberships", "api_keys", "audit_events"}


async def _tables(target: DatabaseTarget) -> set[str]:
    engine = create_engine(target.settings())
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


async def test_upgrade_downgrade_upgrade(empty_db: DatabaseTarget) -> None:
    engine = create_engine(empty_db.settings())
    try:
        assert await migrations.current_revision(engine) is None
        await migrations.upgrade(engine)
        assert await migrations.current_revision(engine) == migrations.head_revision()
        assert await _tables(empty_db) >= FOUNDATION_TABLES

        await migrations.downgrade(engine, "base")
        assert await migrations.current_revision(engine) is None
        assert await _tables(empty_db) == set()

        await migrations.upgrade(engine)
        assert await _tables(empty_db) >= FOUNDATION_TABLES
    finally:
        await engine.dispose()


async def test_models_match_migrations(empty_db: DatabaseTarget) -> None:
    """The ORM models and the migration scripts describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from polymodal.db.models import Base

    engine = create_engine(empty_db.settings())
    try:
        await migrations.upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []
