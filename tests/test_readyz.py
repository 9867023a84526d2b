"""`/readyz` turns 503 naming what failed, and back to 200 when it returns."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from asgi_lifespan import LifespanManager

from polymodal.app import create_app
from tests.conftest import PG_URL, DatabaseTarget, make_settings, need_service
from tests.support import TcpProxy, free_port


async def test_readyz_follows_the_database() -> None:
    need_service("PostgreSQL", PG_URL, 5432)
    target = urlsplit(PG_URL.replace("+asyncpg", ""))
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.restore()
    url = PG_URL.replace(f"{target.hostname}:{target.port or 5432}", f"127.0.0.1:{proxy.port}")
    settings = make_settings(
        database_url=url, database_connect_timeout_s=1.0, readiness_timeout_s=1.5
    )
    app = create_app(settings)
    try:
        async with LifespanManager(app, startup_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.get("/readyz")
                assert r.status_code == 200, r.text
                assert r.json()["checks"] == {"database": "ok"}

                await proxy.cut()
                r = await client.get("/readyz")
                assert r.status_code == 503
                assert r.json()["status"] == "unavailable"
                assert r.json()["checks"]["database"].startswith("error")

                await proxy.restore()
                r = await client.get("/readyz")
                assert r.status_code == 200, r.text
    finally:
        await proxy.cut()


async def test_readyz_names_an_unreachable_redis(migrated_db: DatabaseTarget) -> None:
    settings = migrated_db.settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.5
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("error")


async def test_readyz_with_a_live_redis(migrated_db: DatabaseTarget, redis_url: str) -> None:
    app = create_app(migrated_db.settings(redis_url=redis_url))
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}
