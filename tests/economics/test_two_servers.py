"""Two real `polymodal serve` processes sharing Redis (and the database): a tenant's rate
limit and its hard budget hold across both, under concurrent traffic, and the month's
spend comes back from the ledger when Redis loses it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from polymodal.db import economics as db
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models_economics import TENANT_SUBJECT
from polymodal.db.scope import tenant_session
from polymodal.settings import Settings
from polymodal.testing import FakeProvider
from tests.economics.conftest import (
    ENVIRON,
    FAKE_KEY,
    PRICE_IN,
    PRICE_OUT,
    Tenant,
    chat_body,
    create_tenant,
    economics_settings,
    migrate,
)
from tests.economics.test_budgets_api import ledger_spend
from tests.support import free_port

MTOK = Decimal(1_000_000)


@dataclass
class Pair:
    settings: Settings
    ports: list[int]
    fake: FakeProvider
    redis_url: str
    redis_prefix: str

    def clients(self, key: str) -> list[httpx.Client]:
        return [
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}/v1",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            for port in self.ports
        ]


def _config(settings: Settings, path: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "deployments": [d.model_dump(mode="json") for d in settings.deployments],
                "shipped_catalog": False,
                "default_model": "fake-chat",
                "default_embedding_model": "fake-embed",
                "routes": settings.routes.model_dump(mode="json"),
                "plan_limits": {
                    k: v.model_dump(mode="json") for k, v in settings.plan_limits.items()
                },
                "usage_flush_interval_s": 0.2,
                "upstream_always_stream": False,
                "access_log": False,
                # 16 concurrent calls on a busy 2-core machine: these tests are about
                # limits and budgets, not deadlines, so a slow answer must not be a 504.
                "first_byte_floor_s": 10.0,
                "upstream_first_byte_timeout_s": 30.0,
            }
        )
    )


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    from tests.conftest import REDIS_URL, RUN_ID, need_service

    need_service("Redis", REDIS_URL, 6379)
    tmp = tmp_path_factory.mktemp("two-servers")
    prefix = f"polymodal-test:{RUN_ID}:{uuid.uuid4().hex[:6]}:"
    fake = FakeProvider(wire="openai", api_key=FAKE_KEY)
    fake.start()
    settings = economics_settings(tmp, fake)
    asyncio.run(migrate(settings))
    config = tmp / "polymodal.yaml"
    _config(settings, config)
    env = {
        **os.environ,
        **ENVIRON,
        "POLYMODAL_CONFIG": str(config),
        "POLYMODAL_DATABASE_URL": settings.database_url,
        "POLYMODAL_STORAGE_URL": f"file://{tmp}/objects",
        "POLYMODAL_REDIS_URL": REDIS_URL,
        "POLYMODAL_REDIS_KEY_PREFIX": prefix,
    }
    ports = [free_port(), free_port()]
    logs = [tmp / f"serve-{port}.log" for port in ports]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "polymodal", "serve", "--port", str(port)],
            # Own data folders: local-mode Qdrant allows one process per folder.
            env={**env, "POLYMODAL_DATA_DIR": str(tmp / f"data-{port}")},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    try:
        for port, proc, log in zip(ports, procs, logs, strict=True):
            deadline = time.monotonic() + 120  # a loaded 2-core machine starts slowly
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server process did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield Pair(settings, ports, fake, REDIS_URL, prefix)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        fake.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def _tenant(pair: Pair, *, plan: str = "free", rpm: int | None = None) -> Tenant:
    async def make() -> Tenant:
        t = await create_tenant(pair.settings, plan)
        if rpm is not None:
            engine = create_engine(pair.settings)
            tid = uuid.UUID(t.id)
            try:
                async with tenant_session(session_factory(engine), tid) as s, s.begin():
                    await db.put_override(
                        s,
                        tenant_id=tid,
                        subject=TENANT_SUBJECT,
                        key_id=None,
                        requests_per_minute=rpm,
                        tokens_per_minute=None,
                    )
            finally:
                await engine.dispose()
        return t

    return asyncio.run(make())


def test_the_rate_limit_holds_across_two_processes(pair: Pair) -> None:
    t = _tenant(pair, rpm=10)
    clients = pair.clients(t.key)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda i: clients[i % 2].post("/chat/completions", json=chat_body()).status_code,
                range(30),
            )
        )
    elapsed = time.monotonic() - started
    # 10 a minute (one more every 6 s): each process alone would have admitted 10.
    assert 10 <= statuses.count(200) <= 10 + int(elapsed // 6), (statuses, elapsed)
    assert statuses.count(429) == 30 - statuses.count(200)
    served_by = [c.post("/chat/completions", json=chat_body()) for c in clients]
    assert all(r.status_code == 429 for r in served_by)
    assert all(r.headers["x-ratelimit-remaining-requests"] == "0" for r in served_by)
    for c in clients:
        c.close()


def _wait_for_ledger(pair: Pair, tenant_id: str, calls: int) -> None:
    async def count() -> int:
        engine = create_engine(pair.settings)
        try:
            tid = uuid.UUID(tenant_id)
            async with tenant_session(session_factory(engine), tid) as s:
                from sqlalchemy import func, select

                from polymodal.db.models import UsageEvent

                q = select(func.count()).where(UsageEvent.tenant_id == tid)
                return int((await s.execute(q)).scalar_one())
        finally:
            await engine.dispose()

    deadline = time.monotonic() + 15
    while (n := asyncio.run(count())) < calls:
        assert time.monotonic() < deadline, f"ledger has {n} of {calls} rows"
        time.sleep(0.1)


def _wait_settled(owner: list[httpx.Client]) -> dict[str, str]:
    """Until no reservation is open on either process's view (settling is async)."""
    deadline = time.monotonic() + 10
    while True:
        views = [c.get("/budgets").json() for c in owner]
        if all(Decimal(v["reserved_usd"]) == 0 for v in views):
            return dict(views[0])
        assert time.monotonic() < deadline, views
        time.sleep(0.02)


def test_a_hard_budget_holds_across_two_processes(pair: Pair) -> None:
    t = _tenant(pair, plan="pro")  # 300 a minute: only the budget binds
    limit = Decimal("0.2")
    estimate = (7 * PRICE_IN + 20 * PRICE_OUT) / MTOK  # prompt estimate + max_tokens
    owner = pair.clients(t.owner_key)
    assert owner[0].put("/budgets", json={"monthly_limit_usd": str(limit)}).status_code == 200
    pair.fake.set_faults(latency_ms=50)  # many calls in flight at once
    clients = pair.clients(t.key)
    responses: list[httpx.Response] = []
    try:
        # Rounds of 16 concurrent calls over both processes until a whole round is
        # refused: the spend is then pushed right to the limit.
        with ThreadPoolExecutor(16) as pool:
            for _ in range(30):
                round_ = list(
                    pool.map(
                        lambda i: clients[i % 2].post("/chat/completions", json=chat_body()),
                        range(16),
                    )
                )
                responses += round_
                if all(r.status_code == 402 for r in round_):
                    break
                _wait_settled(owner)
    finally:
        pair.fake.reset()
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 402]
    assert len(ok) + len(refused) == len(responses), {r.status_code for r in responses}
    assert refused, "the budget never stopped a call"
    message = refused[0].json()["error"]["message"]
    assert "monthly budget of this tenant is used up" in message
    assert f"USD {limit:.6f}" in message
    _wait_for_ledger(pair, t.id, len(ok))
    spent = ledger_spend(pair.settings, t.id)
    # Overspend is bounded by one call's estimate (here it is not even reached: every
    # call costs less than its estimate) ...
    assert spent <= limit + estimate, (spent, limit, estimate)
    # ... and a whole round was refused only once no estimate fit any more.
    assert spent > limit - estimate, (spent, limit, estimate)

    # Both processes' counters agree with the ledger once settlements land.
    view = _wait_settled(owner)
    assert abs(Decimal(view["spent_usd"]) - spent) < Decimal("1e-6")

    # Redis loses the month's spend (a restart without persistence): it is read back
    # from the ledger, and the budget still refuses.
    client = redis.Redis.from_url(pair.redis_url)
    lost = list(client.scan_iter(match=f"{pair.redis_prefix}budget:*{t.id}*"))
    assert lost
    client.delete(*lost)
    client.close()
    after = owner[0].get("/budgets").json()
    assert abs(Decimal(after["spent_usd"]) - spent) < Decimal("1e-6")
    # A call whose estimate fits an empty budget but not the spent one is refused.
    room = limit - spent
    max_tokens = int((room + Decimal("0.002")) / (PRICE_OUT / MTOK)) + 1
    assert (7 * PRICE_IN + max_tokens * PRICE_OUT) / MTOK < limit
    last = clients[1].post("/chat/completions", json=chat_body(max_tokens=max_tokens))
    assert last.status_code == 402, last.text
    for c in (*owner, *clients):
        c.close()
