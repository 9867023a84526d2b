"""The few SQL spellings that differ between SQLite and PostgreSQL, in one place, so
repositories and reports stay portable."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, cast, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

# usage_events.cost is NUMERIC(20, 10): money is summed in units of 1e-10 USD.
MONEY_SCALE = 10
_UNITS = 10**MONEY_SCALE


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_ignoring(session: AsyncSession, model: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` (PostgreSQL) / ``INSERT OR IGNORE`` twin."""
    if dialect_of(session) == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    return sqlite.insert(model).on_conflict_do_nothing()


def money_sum(session: AsyncSession, column: Any) -> ColumnElement[Any]:
    """An exact SUM of a NUMERIC money column.

    PostgreSQL sums NUMERIC exactly. SQLite stores NUMERIC as a double (exact to 15
    significant digits per row) and would sum in floating point, so there each row is
    rounded to integer units of 1e-10 first and the integers are summed exactly; read the
    result back with ``money_value``.
    """
    if dialect_of(session) == "postgresql":
        return func.coalesce(func.sum(column), 0)
    return func.coalesce(func.sum(cast(func.round(column * _UNITS), Integer)), 0)


def money_value(session: AsyncSession, raw: Any) -> Decimal:
    """The Decimal of a ``money_sum`` result, at the column's scale."""
    if raw is None:
        return Decimal(0)
    if dialect_of(session) == "postgresql":
        return Decimal(raw).quantize(Decimal(1).scaleb(-MONEY_SCALE))
    return Decimal(int(raw)).scaleb(-MONEY_SCALE)


def utc_day(session: AsyncSession, column: Any) -> ColumnElement[Any]:
    """``YYYY-MM-DD`` of a UTC timestamp column, as text, on either backend."""
    if dialect_of(session) == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC here).
    return func.substr(column, 1, 10)
