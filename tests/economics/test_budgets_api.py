"""Budgets through the real API (embedded profile): a hard budget stops with 402 and a
clear message, a failed upstream call releases its reservation, a cut stream settles
what it used, a soft budget records each alert threshold once, bad input is named."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from polymodal.db import economics as db
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.scope import tenant_session
from polymodal.settings import Settings
from polymodal.tenancy.economics import month_of, month_start
from tests.economics.conftest import PRICE_IN, PRICE_OUT, Env, chat_body

MTOK = Decimal(1_000_000)


def ledger_spend(settings: Settings, tenant_id: str) -> Decimal:
    async def read() -> Decimal:
        engine = create_engine(settings)
        try:
            tid = uuid.UUID(tenant_id)
            async with tenant_session(session_factory(engine), tid) as session:
                return await db.month_spend(
                    session,
                    tenant_id=tid,
                    key_id=None,
                    since=month_start(month_of(datetime.now(UTC))),
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


def budget(client: httpx.Client, path: str = "/budgets") -> dict[str, object]:
    r = client.get(path)
    assert r.status_code == 200, r.text
    data: dict[str, object] = r.json()
    return data


def usd(value: object) -> Decimal:
    return Decimal(str(value))


def test_a_hard_budget_stops_with_402_and_never_overspends(env: Env) -> None:
    t = env.tenant()
    with env.client(t.owner_key) as owner:
        r = owner.put("/budgets", json={"monthly_limit_usd": "0.1", "mode": "hard"})
        assert r.status_code == 200, r.text
        assert r.json()["monthly_limit_usd"] == "0.100000"
    statuses = []
    with env.client(t.key) as c:
        for _ in range(30):
            r = c.post("/chat/completions", json=chat_body(max_tokens=20))
            statuses.append(r.status_code)
            if r.status_code == 402:
                break
            env.settle()  # settle each call, so the next sees its real cost
    assert statuses[-1] == 402, statuses
    assert statuses.count(200) >= 2  # actual costs are well below the estimates
    error = r.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["type"] == "insufficient_quota"
    assert "monthly budget of this tenant" in error["message"]
    assert "USD 0.100000" in error["message"]
    assert "PUT /v1/budgets" in error["message"]
    env.settle()
    with env.client(t.owner_key) as owner:
        view = budget(owner)
    assert usd(view["reserved_usd"]) == 0
    assert usd(view["spent_usd"]) <= Decimal("0.1")
    # The live counter agrees with the ledger, call for call.
    assert abs(usd(view["spent_usd"]) - ledger_spend(env.settings, t.id)) < Decimal("1e-6")


def test_a_failed_upstream_call_releases_its_reservation(env: Env) -> None:
    t = env.tenant()
    # Room for exactly one estimate (7 prompt tokens + 20 output at these prices).
    estimate = (7 * PRICE_IN + 20 * PRICE_OUT) / MTOK
    with env.client(t.owner_key) as owner:
        limit = str(estimate + Decimal("0.001"))
        assert owner.put("/budgets", json={"monthly_limit_usd": limit}).status_code == 200
    env.fake.set_faults(status=500)
    with env.client(t.key) as c:
        failed = c.post("/chat/completions", json=chat_body(max_tokens=20))
        assert failed.status_code >= 500
        env.settle()
        with env.client(t.owner_key) as owner:
            view = budget(owner)
        assert usd(view["spent_usd"]) == 0
        assert usd(view["reserved_usd"]) == 0
        env.fake.reset()
        # Had the failed call kept its reservation, this one would not fit.
        assert c.post("/chat/completions", json=chat_body(max_tokens=20)).status_code == 200


def test_a_cut_stream_settles_what_it_used(env: Env) -> None:
    t = env.tenant()
    with env.client(t.owner_key) as owner:
        assert owner.put("/budgets", json={"monthly_limit_usd": "5"}).status_code == 200
    env.fake.set_faults(truncate_after_chunks=3)
    body = {**chat_body(max_tokens=200, text="Tell me a long story about ten red foxes")}
    with (
        env.client(t.key) as c,
        c.stream("POST", "/chat/completions", json={**body, "stream": True}) as s,
    ):
        text = s.read().decode()
    assert '"error"' in text and "[DONE]" not in text  # cut, and said so in-band
    env.settle()
    with env.client(t.owner_key) as owner:
        view = budget(owner)
    spent = usd(view["spent_usd"])
    assert usd(view["reserved_usd"]) == 0
    assert 0 < spent < (20 * PRICE_IN + 200 * PRICE_OUT) / MTOK  # used some, not the estimate
    assert abs(spent - ledger_spend(env.settings, t.id)) < Decimal("1e-6")


def alert_count(env: Env, threshold: str) -> float:
    text = httpx.get(env.server.base_url + "/metrics").text
    for line in text.splitlines():
        if (
            line.startswith("polymodal_budget_alerts_total{")
            and f'threshold="{threshold}"' in line
            and 'kind="tenant"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_soft_budget_records_each_threshold_once(env: Env) -> None:
    t = env.tenant()
    before = {th: alert_count(env, th) for th in ("0.8", "1")}
    with env.client(t.owner_key) as owner:
        r = owner.put("/budgets", json={"monthly_limit_usd": "0.03", "mode": "soft"})
        assert r.json()["alert_thresholds"] == [0.8, 1.0]
    with env.client(t.key) as c:
        for _ in range(6):  # about 0.011 USD each: well past 100 %
            assert c.post("/chat/completions", json=chat_body(max_tokens=20)).status_code == 200
            env.settle()
    with env.client(t.owner_key) as owner:
        view = budget(owner)
    assert usd(view["spent_usd"]) > Decimal("0.03")  # soft: calls went on
    alerts = view["alerts"]
    assert isinstance(alerts, list)
    assert sorted(a["threshold"] for a in alerts) == [0.8, 1.0]
    assert all(usd(a["spent_usd"]) >= Decimal("0.024") for a in alerts)
    assert alert_count(env, "0.8") == before["0.8"] + 1
    assert alert_count(env, "1") == before["1"] + 1


def test_a_key_budget_binds_that_key_only(env: Env) -> None:
    t = env.tenant()
    with env.client(t.owner_key) as owner:
        r = owner.put(f"/keys/{t.key_id}/budget", json={"monthly_limit_usd": "0"})
        assert r.status_code == 200, r.text
        assert r.json()["subject"] == t.key_id
    with env.client(t.key) as limited, env.client(t.other_key) as other:
        refused = limited.post("/chat/completions", json=chat_body())
        assert refused.status_code == 402
        assert "this API key" in refused.json()["error"]["message"]
        assert f"PUT /v1/keys/{t.key_id}/budget" in refused.json()["error"]["message"]
        assert other.post("/chat/completions", json=chat_body()).status_code == 200
        assert (
            limited.post("/embeddings", json={"model": "fake-embed", "input": "x"}).status_code
            == 402
        )
    with env.client(t.owner_key) as owner:
        assert owner.delete(f"/keys/{t.key_id}/budget").status_code == 204
    with env.client(t.key) as limited:
        assert limited.post("/chat/completions", json=chat_body()).status_code == 200


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"monthly_limit_usd": "-1"}, "monthly_limit_usd"),
        ({"monthly_limit_usd": "abc"}, "monthly_limit_usd"),
        ({"monthly_limit_usd": "10", "mode": "maybe"}, "mode"),
        ({"monthly_limit_usd": "10", "alert_thresholds": [0.333]}, "alert_thresholds"),
        ({"monthly_limit_usd": "10", "alert_thresholds": [0]}, "alert_thresholds"),
        ({}, "monthly_limit_usd"),
    ],
)
def test_bad_budgets_are_refused_by_name(env: Env, body: dict[str, object], named: str) -> None:
    t = env.tenant()
    with env.client(t.owner_key) as owner:
        r = owner.put("/budgets", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["message"].startswith(named)
        assert budget(owner)["monthly_limit_usd"] is None  # nothing was written


def test_budget_permissions_and_unknown_keys(env: Env) -> None:
    t = env.tenant()
    with env.client(t.key) as member:
        assert member.get("/budgets").status_code == 200  # budgets:read
        denied = member.put("/budgets", json={"monthly_limit_usd": "1"})
        assert denied.status_code == 403
        assert "budgets:write" in denied.json()["error"]["message"]
    with env.client(t.owner_key) as owner:
        missing = owner.put(f"/keys/{uuid.uuid4()}/budget", json={"monthly_limit_usd": "1"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "key_not_found"
    other = env.tenant()
    with env.client(other.owner_key) as stranger:
        # Another tenant's key is "not found", never readable or writable.
        r = stranger.put(f"/keys/{t.key_id}/budget", json={"monthly_limit_usd": "1"})
        assert r.status_code == 404
        assert stranger.get(f"/keys/{t.key_id}/budget").status_code == 404


def test_template_generation_is_metered_too(env: Env) -> None:
    """Templates call models through the same gateway: budgets and limits apply."""
    from polymodal.templates.catalog import builtin_catalog

    template = "cease-and-desist-letter"
    inputs = dict(builtin_catalog().entries[template].template.example)
    t = env.tenant()
    with env.client(t.owner_key) as owner:
        assert (
            owner.put(f"/keys/{t.key_id}/budget", json={"monthly_limit_usd": "0"}).status_code
            == 200
        )
        assert (
            owner.put(f"/keys/{t.other_key_id}/limits", json={"requests_per_minute": 1}).status_code
            == 200
        )
    with env.client(t.key) as broke:
        for stream in (False, True):
            r = broke.post(
                f"/templates/{template}/generate",
                json={"inputs": inputs, "model": "fake-chat", "stream": stream},
            )
            assert r.status_code == 402, r.text
            assert r.json()["error"]["code"] == "budget_exceeded"
    with env.client(t.other_key) as limited:
        body = {"inputs": inputs, "model": "fake-chat"}
        first = limited.post(f"/templates/{template}/generate", json=body)
        assert first.status_code != 429, first.text
        second = limited.post(f"/templates/{template}/generate", json=body)
        assert second.status_code == 429, second.text
        assert second.headers["retry-after"]


def test_a_client_that_hangs_up_mid_stream_pays_for_what_it_got(env: Env) -> None:
    t = env.tenant()
    with env.client(t.owner_key) as owner:
        assert owner.put("/budgets", json={"monthly_limit_usd": "5"}).status_code == 200
    env.fake.set_default_reply(" ".join(["fox"] * 300))  # 20 s at 100 ms a chunk
    env.fake.set_faults(chunk_delay_ms=100)
    body = {**chat_body(max_tokens=200, text="Tell me a long story about ten red foxes")}
    with (
        env.client(t.key) as c,
        c.stream("POST", "/chat/completions", json={**body, "stream": True}) as s,
    ):
        lines = s.iter_lines()
        got = [next(lines) for _ in range(3)]  # a few chunks, then hang up
    assert any(line.startswith("data: ") for line in got)
    deadline = time.monotonic() + 10
    with env.client(t.owner_key) as owner:
        while Decimal(str((view := budget(owner))["reserved_usd"])) != 0:
            assert time.monotonic() < deadline, "the hung-up stream never settled"
            time.sleep(0.05)
    spent = usd(view["spent_usd"])
    # It paid for the prompt and the few chunks streamed before it left, not for 200.
    assert 0 < spent < (20 * PRICE_IN + 50 * PRICE_OUT) / MTOK
