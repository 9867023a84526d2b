"""The operator's cross-tenant cost report (`polymodal admin usage report`), on SQLite and
PostgreSQL (where it reads past Row-Level Security through a system session)."""

from __future__ import annotations

import asyncio
import csv
import io
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.db.engine import create_engine, session_factory
from tests.conftest import DatabaseTarget
from tests.ledger.conftest import Tenant, insert, new_tenant, usage, utc


def test_cost_by_tenant_and_by_tenant_and_day(
    migrated_db: DatabaseTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = migrated_db.settings()
    monkeypatch.setenv("POLYMODAL_DATABASE_URL", settings.database_url)
    if settings.database_schema:
        monkeypatch.setenv("POLYMODAL_DATABASE_SCHEMA", settings.database_schema)
    monkeypatch.setenv("POLYMODAL_DATA_DIR", str(settings.data_dir))

    async def setup() -> tuple[Tenant, Tenant]:
        engine = create_engine(settings)
        try:
            sessions = session_factory(engine)
            a, b = await new_tenant(sessions, "pro"), await new_tenant(sessions, "free")
            # 1999 is a year no other test writes to, so the report sees only these rows.
            await insert(
                sessions,
                [
                    usage(a.id, cost="0.1000000001", at=utc(1999, 3, 1, 10)),
                    usage(a.id, cost="0.2000000002", at=utc(1999, 3, 2, 10)),
                    usage(b.id, cost="3", at=utc(1999, 3, 2, 11), tokens_in=100),
                    usage(b.id, cost="50", at=utc(1999, 4, 1)),  # outside the range
                ],
            )
            return a, b
        finally:
            await engine.dispose()

    a, b = asyncio.run(setup())
    runner = CliRunner()
    args = ["admin", "usage", "report", "--from", "1999-03-01", "--to", "1999-03-31"]
    by_tenant = runner.invoke(app, [*args, "--format", "csv"])
    assert by_tenant.exit_code == 0, by_tenant.output
    rows = list(csv.DictReader(io.StringIO(by_tenant.stdout)))
    assert [(r["tenant"], r["plan"], Decimal(r["cost_usd"]), int(r["requests"])) for r in rows] == [
        (b.name, "free", Decimal(3), 1),
        (a.name, "pro", Decimal("0.3000000003"), 2),
    ]
    assert rows[0]["tokens_in"] == "100"

    by_day = runner.invoke(app, [*args, "--by", "day", "--format", "csv"])
    assert by_day.exit_code == 0, by_day.output
    days = {
        (r["tenant"], r["day"]): Decimal(r["cost_usd"])
        for r in csv.DictReader(io.StringIO(by_day.stdout))
    }
    assert days == {
        (b.name, "1999-03-02"): Decimal(3),
        (a.name, "1999-03-02"): Decimal("0.2000000002"),
        (a.name, "1999-03-01"): Decimal("0.1000000001"),
    }

    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "total cost: 3.3000000003 USD over 2 tenants" in table.stdout
    bad = runner.invoke(app, ["admin", "usage", "report", "--from", "March"])
    assert bad.exit_code == 2 and "from" in bad.output
