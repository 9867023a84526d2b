"""Routing decisions, overrides, tenant policy, visibility and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from polymodal.app import create_app
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models import Tenant, UsageEvent
from polymodal.gateway.routing import RoutesError
from polymodal.tenancy import admin
from tests.gateway.conftest import ENVIRON, Stack, stack_settings
from tests.gateway.test_failover import HELLO, route
from tests.live import LiveServer

HARD = (
    "Design a fault-tolerant architecture for a multi-region payment system step by step, "
    "compare the trade-offs of each option in depth and give a detailed plan."
)


@pytest.fixture
def live(stack: Stack) -> Iterator[LiveServer]:
    stack.reset()
    with LiveServer(stack.settings.model_copy(update={"auth_cache_ttl_s": 0}), ENVIRON) as s:
        yield s


def post(stack: Stack, server: LiveServer, body: dict[str, Any], **headers: str) -> httpx.Response:
    return stack.client(server).post(
        "/chat/completions", json={"messages": HELLO, **body}, headers=headers
    )


def set_policy(stack: Stack, **policy: Any) -> None:
    async def run() -> None:
        engine = create_engine(stack.settings)
        sessions = session_factory(engine)
        async with sessions() as s:
            tenant = (
                (await s.execute(select(Tenant).order_by(Tenant.created_at.desc())))
                .scalars()
                .first()
            )
        assert tenant is not None
        await admin.set_routing_policy(sessions, tenant=tenant.name, policy=policy, actor="test")
        await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def reset_policy(stack: Stack) -> Iterator[None]:
    yield
    set_policy(stack)


def test_auto_classifies_and_routes(stack: Stack, live: LiveServer) -> None:
    easy = post(stack, live, {"model": "auto"})
    hard = post(stack, live, {"model": "auto", "messages": [{"role": "user", "content": HARD}]})
    assert easy.status_code == hard.status_code == 200
    assert route(easy.headers)["tier"] == "simple"
    assert route(hard.headers)["tier"] in ("complex", "critical")
    assert route(easy.headers)["language"] == "en"


def test_tier_overrides(stack: Stack, live: LiveServer) -> None:
    assert route(post(stack, live, {"model": "tier:critical"}).headers)["tier"] == "critical"
    r = post(stack, live, {"model": "auto"}, **{"x-polymodal-tier": "complex"})
    assert route(r.headers)["tier"] == "complex"


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        ({"model": "tier:huge"}, {}, 400, "huge"),
        ({"model": "auto"}, {"x-polymodal-tier": "ultra"}, 400, "x-polymodal-tier"),
        ({"model": "no-such-model"}, {}, 404, "no-such-model"),
        ({"model": "primary", "fallbacks": ["ghost"]}, {}, 400, "fallbacks[0]"),
        ({"model": "auto", "fallbacks": ["backup"]}, {}, 400, "fallbacks"),
    ],
)
def test_bad_routing_input(
    stack: Stack,
    live: LiveServer,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    needle: str,
) -> None:
    before = sum(len(f.requests) for f in stack.fakes.values())
    r = post(stack, live, body, **headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert sum(len(f.requests) for f in stack.fakes.values()) == before


def test_tenant_policy_limits_deployments_and_tiers(
    stack: Stack, live: LiveServer, reset_policy: None
) -> None:
    set_policy(stack, allowed_deployments=["backup", "third"], max_tier="simple")
    r = post(stack, live, {"model": "tier:critical"})
    assert r.status_code == 200
    info = route(r.headers)
    assert info["tier"] == "simple" and info["deployment"] == "backup"
    assert post(stack, live, {"model": "primary"}).status_code == 403
    r = post(stack, live, {"model": "backup", "fallbacks": ["claude"]})
    assert r.status_code == 403 and "fallbacks[0]" in r.json()["error"]["message"]


def test_eu_only_style_provider_policy(stack: Stack, live: LiveServer, reset_policy: None) -> None:
    set_policy(stack, allowed_providers=["anthropic"])
    r = post(stack, live, {"model": "tier:simple"})
    assert r.status_code == 503  # no route candidate is an allowed provider
    assert post(stack, live, {"model": "claude"}).status_code == 200


def test_usage_row_records_tier_task_and_attempts(stack: Stack, live: LiveServer) -> None:
    stack.fakes["primary"].set_faults(status=503, times=1)
    r = post(stack, live, {"model": "tier:simple"}, **{"x-request-id": "route-usage-1"})
    assert r.status_code == 200
    live.call(live.state.usage.flush())

    async def rows() -> list[UsageEvent]:
        engine = create_engine(stack.settings)
        async with session_factory(engine)() as s:
            found = (
                (
                    await s.execute(
                        select(UsageEvent).where(UsageEvent.request_id == "route-usage-1")
                    )
                )
                .scalars()
                .all()
            )
        await engine.dispose()
        return list(found)

    [row] = asyncio.run(rows())
    assert (row.tier, row.task, row.attempts, row.deployment) == ("simple", "chat", 2, "backup")
    assert row.cost > Decimal(0)


def test_routing_health_and_metrics(stack: Stack, live: LiveServer) -> None:
    stack.fakes["primary"].set_faults(status=503, times=1)
    post(stack, live, {"model": "tier:simple"})
    client = stack.client(live)
    health = {d["deployment"]: d for d in client.get("/routing/health").json()["data"]}
    assert {"primary", "backup", "third", "claude", "dead"} <= set(health)
    assert health["primary"]["consecutive_failures"] == 1
    assert health["backup"]["first_byte_p50_ms"] is not None
    metrics = httpx.get(live.base_url + "/metrics").text
    assert 'polymodal_route_decisions_total{task="chat",tier="simple"}' in metrics
    assert 'polymodal_failovers_total{cause="upstream_unavailable"}' in metrics
    assert 'polymodal_upstream_attempts_total{deployment="backup",outcome="ok"}' in metrics


def test_routes_naming_a_missing_deployment_stop_start_up(stack: Stack) -> None:
    settings = stack_settings(
        stack.tmp,
        stack.fakes,
        stack.refused,
        routes={"simple": ["primary", "nope"], "complex": ["primary"], "critical": ["primary"]},
    )
    with pytest.raises(RoutesError, match=r"routes\.simple: names missing deployment 'nope'"):
        create_app(settings, environ=ENVIRON)
