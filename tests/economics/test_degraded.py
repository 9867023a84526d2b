"""When Redis goes away, limits degrade and budgets stay safe: calls without a hard budget
go through (counted as degraded), calls under a hard budget get a clear 503, and both
recover when Redis is back."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from polymodal.app import create_app
from polymodal.testing import FakeProvider
from tests.conftest import REDIS_URL, need_service
from tests.economics.conftest import FAKE_KEY, chat_body, create_tenant, economics_settings, migrate
from tests.support import TcpProxy


def degraded(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("polymodal_economics_degraded_total{")
    )


async def test_a_lost_redis_degrades_limits_and_pauses_hard_budgets(
    tmp_path: Path, redis_prefix: str
) -> None:
    need_service("Redis", REDIS_URL, 6379)
    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.restore()
    fake = FakeProvider(wire="openai", api_key=FAKE_KEY)
    fake.start()
    db_number = REDIS_URL.rsplit("/", 1)[1]
    settings = economics_settings(
        tmp_path,
        fake,
        redis_url=f"redis://127.0.0.1:{proxy.port}/{db_number}",
        redis_key_prefix=redis_prefix,
        redis_timeout_s=0.5,
    )
    await migrate(settings)
    t = await create_tenant(settings, "pro")
    app = create_app(settings, environ={"FAKE_KEY": FAKE_KEY})
    try:
        async with LifespanManager(app, startup_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)

            def client(key: str) -> httpx.AsyncClient:
                return httpx.AsyncClient(
                    transport=transport,
                    base_url="http://t/v1",
                    headers={"Authorization": f"Bearer {key}"},
                )

            async with (
                client(t.owner_key) as owner,
                client(t.key) as budgeted,
                client(t.other_key) as free,
            ):
                r = await owner.put(f"/keys/{t.key_id}/budget", json={"monthly_limit_usd": "5"})
                assert r.status_code == 200, r.text
                assert (
                    await budgeted.post("/chat/completions", json=chat_body())
                ).status_code == 200
                ok = await free.post("/chat/completions", json=chat_body())
                assert ok.status_code == 200 and "x-ratelimit-remaining-requests" in ok.headers
                before = degraded((await owner.get("http://t/metrics")).text)

                await proxy.cut()
                through = await free.post("/chat/completions", json=chat_body())
                assert through.status_code == 200, through.text
                assert "x-ratelimit-remaining-requests" not in through.headers  # unknown now
                paused = await budgeted.post("/chat/completions", json=chat_body())
                assert paused.status_code == 503, paused.text
                assert paused.json()["error"]["code"] == "budget_state_unavailable"
                assert "hard budget" in paused.json()["error"]["message"]
                assert degraded((await owner.get("http://t/metrics")).text) >= before + 2

                await proxy.restore()
                for c in (budgeted, free):
                    back = await c.post("/chat/completions", json=chat_body())
                    assert back.status_code == 200, back.text
                    assert "x-ratelimit-remaining-requests" in back.headers
    finally:
        await proxy.cut()
        fake.stop()
