"""What tenant isolation on PostgreSQL costs one tenant-scoped transaction: the
``set_config('app.tenant_id', ...)`` round trip at BEGIN plus the RLS policy on every
row read, against the same query run unconfined (no role switch, no tenant setting).

Three ways to run the same two reads (a key list, and an aggregate over the tenant's
ledger rows) in one transaction, on one PostgreSQL schema made for the run:

- ``baseline``: the URL's superuser, plain session (RLS bypassed, no tenant setting);
- ``tenant setting only``: superuser, tenant session (the extra round trip, RLS bypassed);
- ``confined``: the app role with RLS (what production runs).

    .venv/bin/python bench/rls_overhead.py [--calls 2000] [--rows 20000]

Prints a table and writes bench/results/rls_overhead.json. The database URL is
``POLYMODAL_BENCH_DATABASE_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine_info
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from polymodal.db import migrate as migrations
from polymodal.db import repositories
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models import UsageEvent
from polymodal.db.scope import system_session, tenant_session
from polymodal.settings import Settings
from polymodal.tenancy import admin

RESULTS = Path(__file__).resolve().parent / "results" / "rls_overhead.json"
URL = os.environ.get(
    "POLYMODAL_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
COST = text("SELECT count(*), coalesce(sum(cost), 0) FROM usage_events WHERE tenant_id = :t")
ROUNDS = 10
Opener = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sample(calls: int, open_session: Opener, tenant: uuid.UUID) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        async with open_session() as s, s.begin():
            await repositories.list_api_keys(s, tenant_id=tenant)
            await s.execute(COST, {"t": tenant})
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(pct(samples, 0.5), 1),
        "p95_us": round(pct(samples, 0.95), 1),
        "p99_us": round(pct(samples, 0.99), 1),
        "mean_us": round(sum(samples) / len(samples), 1),
    }


async def seed(sessions: async_sessionmaker[AsyncSession], rows: int) -> list[uuid.UUID]:
    tenants = []
    for n in range(2):
        name = f"bench-{n}"
        t = await admin.create_tenant(sessions, name=name, actor="bench")
        await admin.add_user(sessions, tenant=name, email=f"o@{name}.test", role="owner", actor="b")
        for _ in range(5):
            await admin.issue_key(sessions, tenant=name, email=f"o@{name}.test", actor="b")
        tenants.append(t.id)
    now = datetime.now(UTC)
    row = {
        "kind": "chat",
        "deployment": "bench",
        "provider": "openai",
        "model": "m",
        "status": "ok",
        "cost": Decimal("0.001"),
        "created_at": now,
    }
    async with system_session(sessions) as s, s.begin():
        for t in tenants:  # both tenants, so the confined read has rows to hide
            await s.execute(
                insert(UsageEvent),
                [{**row, "tenant_id": t, "event_id": uuid.uuid4()} for _ in range(rows)],
            )
        await s.execute(text("ANALYZE usage_events"))
    return tenants


def settings(schema: str, role: str) -> Settings:
    return Settings(
        environment="test",
        secret_key="bench-secret-" + "x" * 32,
        database_url=URL,
        database_schema=schema,
        database_rls_role=role,
        log_json=True,
    )


async def main(calls: int, rows: int) -> dict[str, Any]:
    load_start = round(os.getloadavg()[0], 2)
    schema = f"pm_bench_rls_{uuid.uuid4().hex[:8]}"
    admin_engine = create_async_engine(URL)
    async with admin_engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    confined = create_engine(settings(schema, "polymodal_app"))
    unconfined = create_engine(settings(schema, ""))
    try:
        await migrations.upgrade(confined)
        tenant = (await seed(session_factory(confined), rows))[0]
        plain = session_factory(unconfined)
        app = session_factory(confined)

        def baseline() -> AbstractAsyncContextManager[AsyncSession]:
            return plain()

        def setting_only() -> AbstractAsyncContextManager[AsyncSession]:
            return tenant_session(plain, tenant)

        def rls() -> AbstractAsyncContextManager[AsyncSession]:
            return tenant_session(app, tenant)

        modes: dict[str, Opener] = {
            "baseline": baseline,
            "tenant setting only": setting_only,
            "confined (RLS)": rls,
        }
        for opener in modes.values():  # warm the pools and plans
            await sample(50, opener, tenant)
        # Interleaved rounds, so a change in the machine's load hits every mode alike.
        samples: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(ROUNDS):
            for name, opener in modes.items():
                samples[name] += await sample(max(1, calls // ROUNDS), opener, tenant)
        results = {name: summary(values) for name, values in samples.items()}
    finally:
        await confined.dispose()
        await unconfined.dispose()
        async with admin_engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin_engine.dispose()
    return {
        "benchmark": "rls_overhead",
        "calls": calls,
        "ledger_rows_per_tenant": rows,
        "transaction": "BEGIN; list_api_keys; count+sum of the tenant's usage rows; COMMIT",
        "results": results,
        "machine": machine_info(),
        "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "note": "the 2-core machine is shared: a load average well above 2 means other "
        "work was running and the absolute numbers are mostly scheduling delay",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    report = asyncio.run(main(args.calls, args.rows))
    print(f"{'mode':<22}{'p50 us':>10}{'p95 us':>10}{'p99 us':>10}{'mean us':>10}")
    for name, r in report["results"].items():
        print(f"{name:<22}{r['p50_us']:>10}{r['p95_us']:>10}{r['p99_us']:>10}{r['mean_us']:>10}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
