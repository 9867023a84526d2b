"""The database side of limits and budgets on SQLite and on PostgreSQL with Row-Level
Security: overrides and budgets are read through tenant-scoped sessions, the month's
spend is reconciled from the ledger, alert flags are written once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from polymodal.testing import FakeProvider
from tests.conftest import DatabaseTarget
from tests.economics.conftest import (
    ENVIRON,
    FAKE_KEY,
    chat_body,
    create_tenant,
    economics_overrides,
)
from tests.live import LiveServer


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(wire="openai", api_key=FAKE_KEY) as f:
        yield f


def test_limits_and_budgets_on_each_backend(
    migrated_db: DatabaseTarget, fake: FakeProvider, tmp_path: Path
) -> None:
    settings = migrated_db.settings(
        **economics_overrides(fake), qdrant_path=tmp_path / f"qdrant-{uuid.uuid4().hex[:6]}"
    )
    t = asyncio.run(create_tenant(settings, "free"))
    with LiveServer(settings, ENVIRON) as server:

        def settle() -> None:
            server.call(server.state.economics.drain())
            server.call(server.state.usage.flush())

        def client(key: str) -> httpx.Client:
            return server.client(key, path="/v1")

        with client(t.owner_key) as owner, client(t.key) as member, client(t.other_key) as other:
            # Spend before any budget exists: the ledger has it.
            assert member.post("/chat/completions", json=chat_body()).status_code == 200
            settle()
            before = Decimal(owner.get("/budgets").json()["spent_usd"])
            assert before > 0

            assert owner.put("/limits", json={"requests_per_minute": 20}).status_code == 200
            assert (
                owner.put(
                    f"/keys/{t.other_key_id}/budget", json={"monthly_limit_usd": "0"}
                ).status_code
                == 200
            )
            r = owner.put("/budgets", json={"monthly_limit_usd": "0.025", "mode": "soft"})
            assert r.status_code == 200, r.text
            # The new budget starts from the month's spend so far (read from the ledger).
            assert Decimal(r.json()["spent_usd"]) == before

            ok = member.post("/chat/completions", json=chat_body())
            assert ok.status_code == 200
            assert ok.headers["x-ratelimit-limit-requests"] == "20"
            assert other.post("/chat/completions", json=chat_body()).status_code == 402
            settle()
            view = owner.get("/budgets").json()
            assert Decimal(view["spent_usd"]) > Decimal("0.020")  # past 80 %, below 100 %
            assert [a["threshold"] for a in view["alerts"]] == [0.8]
            key_view = owner.get(f"/keys/{t.other_key_id}/budget").json()
            assert key_view["mode"] == "hard" and Decimal(key_view["spent_usd"]) == 0
