"""What rate limits and budgets add to one model call: the meter's admission (limiter,
plus a budget reservation when one applies) on the request path, and its settlement
(token refund, budget settle) off it. In-process and on Redis on loopback; sequential
latency percentiles, and admissions per second with many callers at once.

    .venv/bin/python bench/economics_overhead.py [--calls 3000] [--redis redis://127.0.0.1:6379/15]

Prints a table and writes bench/results/economics_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine_info

from polymodal.cache.redis import RedisCache
from polymodal.db import economics as db
from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models_economics import TENANT_SUBJECT
from polymodal.db.scope import tenant_session
from polymodal.domain.principal import Principal, Role
from polymodal.settings import Settings
from polymodal.tenancy import admin
from polymodal.tenancy.budgets import MemoryBudgets, RedisBudgets
from polymodal.tenancy.economics import Economics
from polymodal.tenancy.limits import MemoryLimiter, RedisLimiter

RESULTS = Path(__file__).resolve().parent / "results" / "economics_overhead.json"
PLANS = {"free": (10**9, 10**12), "pro": (10**9, 10**12), "enterprise": (10**9, 10**12)}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(calls: int, redis_url: str | None) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="pm-bench-econ-"))
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'b.db'}", data_dir=tmp)
    engine = create_engine(settings)
    await migrations.upgrade(engine)
    sessions = session_factory(engine)
    rows: list[dict[str, Any]] = []
    backends: list[tuple[str, Any, Any, Any]] = [
        ("in-process", MemoryLimiter(), MemoryBudgets(), None)
    ]
    if redis_url:
        prefix = f"pm-bench:{uuid.uuid4().hex[:6]}:"
        cache = RedisCache(redis_url, prefix=prefix, timeout_s=settings.redis_timeout_s)
        client = cache.client  # the production client: one blocking pool per process
        backends.append(
            (
                "redis",
                RedisLimiter(client, prefix=prefix),
                RedisBudgets(client, prefix=prefix),
                client,
            )
        )
    for backend, limiter, store, client in backends:
        for budgeted in (False, True):
            name = f"bench-{uuid.uuid4().hex[:6]}"
            tenant = await admin.create_tenant(sessions, name=name, actor="bench")
            if budgeted:
                async with tenant_session(sessions, tenant.id) as s, s.begin():
                    await db.put_budget(
                        s,
                        tenant_id=tenant.id,
                        subject=TENANT_SUBJECT,
                        key_id=None,
                        monthly_limit_usd=Decimal(10**6),
                        mode="hard",
                        alert_thresholds=[],
                    )
            econ = Economics(
                limiter=limiter,
                store=store,
                sessions=sessions,
                plans=PLANS,
                rate_limits=True,
                reservation_ttl_s=900,
                alert_thresholds=(),
                cache_ttl_s=3600,
            )
            principal = Principal(
                tenant_id=tenant.id,
                user_id=uuid.uuid4(),
                roles=frozenset({Role.MEMBER}),
                key_id=uuid.uuid4(),
            )
            cost = Decimal("0.0012")
            await econ.admit(principal, tokens=500, cost=cost)  # warm: terms, reconcile
            await econ.drain()
            admit_us: list[float] = []
            settle_us: list[float] = []
            for _ in range(calls):
                t0 = time.perf_counter()
                ticket = await econ.admit(principal, tokens=500, cost=cost)
                t1 = time.perf_counter()
                ticket.settle(tokens=120, cost=Decimal("0.0003"))
                await econ.drain()
                t2 = time.perf_counter()
                admit_us.append((t1 - t0) * 1e6)
                settle_us.append((t2 - t1) * 1e6)
            # Many callers at once (after the sequential part warmed the pool): admissions
            # per second through one event loop.
            concurrent = 200
            for _ in range(2):  # the first burst opens the pool's connections
                t0 = time.perf_counter()
                tickets = await asyncio.gather(
                    *(econ.admit(principal, tokens=500, cost=cost) for _ in range(concurrent))
                )
                elapsed = time.perf_counter() - t0
                for ticket in tickets:
                    ticket.release()
                await econ.drain()
            rows.append(
                {
                    "backend": backend,
                    "budget": "hard" if budgeted else "none",
                    "calls": calls,
                    "admit_p50_us": round(statistics.median(admit_us), 1),
                    "admit_p95_us": round(pct(admit_us, 0.95), 1),
                    "admit_p99_us": round(pct(admit_us, 0.99), 1),
                    "settle_p50_us": round(statistics.median(settle_us), 1),
                    "settle_p95_us": round(pct(settle_us, 0.95), 1),
                    "admits_per_s_concurrent": round(len(tickets) / elapsed),
                }
            )
        if client is not None:
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
    await engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(run(args.calls, None if args.no_redis else args.redis))
    header = (
        f"{'backend':<11} {'budget':<6} {'admit p50':>10} {'p95':>8} {'p99':>8} "
        f"{'settle p50':>11} {'p95':>8} {'admits/s (200 at once)':>24}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backend']:<11} {r['budget']:<6} {r['admit_p50_us']:>8.0f}us "
            f"{r['admit_p95_us']:>6.0f}us {r['admit_p99_us']:>6.0f}us "
            f"{r['settle_p50_us']:>9.0f}us {r['settle_p95_us']:>6.0f}us "
            f"{r['admits_per_s_concurrent']:>24}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "economics_overhead",
                "note": "meter only (no HTTP, no provider); machine shared with other "
                "work while measured",
                "machine": machine_info(),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
