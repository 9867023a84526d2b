"""The ledger end to end over real HTTP: calls by two users (openai SDK and a template),
then the usage reports (JSON and CSV), the audit log and the metrics."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from polymodal.db.models import ApiKey, UsageEvent
from polymodal.db.scope import system_session
from polymodal.domain.usage import FEATURE_KINDS
from polymodal.templates.catalog import builtin_catalog
from polymodal.testing import FakeProvider
from tests.live import LiveServer
from tests.setup_helpers import fake_chat_deployment, routed_to_fake, seed_tenants, sqlite_settings

FAKE_KEY = "sk-fake-upstream-key-0123456789"
TEMPLATE = "mutual-nda"
PEOPLE = (("dev@l.test", "developer"), ("adm@l.test", "admin"), ("view@l.test", "viewer"))


@dataclass
class LedgerEnv:
    server: LiveServer
    keys: dict[str, str]  # email -> secret
    tenant_id: uuid.UUID

    def client(self, email: str) -> httpx.Client:
        return self.server.client(self.keys[email], path="/v1")

    def rows(self) -> list[UsageEvent]:
        self.server.call(self.server.state.usage.flush())

        async def read() -> list[UsageEvent]:
            async with system_session(self.server.state.sessions) as s:
                q = select(UsageEvent).where(UsageEvent.tenant_id == self.tenant_id)
                return list((await s.execute(q)).scalars())

        return self.server.call(read())


@pytest.fixture(scope="module")
def lenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerEnv]:
    tmp: Path = tmp_path_factory.mktemp("ledger-api")
    with FakeProvider(wire="openai", api_key=FAKE_KEY) as fake:
        settings = sqlite_settings(
            tmp,
            "ledger.db",
            **routed_to_fake(
                fake_chat_deployment(fake, "fake-openai"),
                shipped_catalog=False,
                default_model="fake-openai",
                default_embedding_model="fake-openai",
            ),
        )
        made = asyncio.run(seed_tenants(settings, {"ledger-api": PEOPLE}, plan="pro"))
        with LiveServer(settings, {"FAKE_KEY": FAKE_KEY}) as server:
            env = LedgerEnv(server, made.keys, made.tenant_ids["ledger-api"])
            _traffic(env)
            yield env


def _traffic(env: LedgerEnv) -> None:
    """Three API calls by the developer (one streamed), one by the admin, one template."""
    for email, n in (("dev@l.test", 3), ("adm@l.test", 1)):
        client = openai.OpenAI(
            base_url=env.server.base_url + "/v1", api_key=env.keys[email], max_retries=0
        )
        for i in range(n):
            messages = [{"role": "user", "content": f"count to {i}"}]
            if i == 2:
                for _ in client.chat.completions.create(
                    model="fake-openai",
                    messages=messages,
                    stream=True,  # type: ignore[arg-type]
                ):
                    pass
            else:
                client.chat.completions.create(model="fake-openai", messages=messages)  # type: ignore[arg-type]
    inputs = dict(builtin_catalog().entries[TEMPLATE].template.example)
    with env.client("dev@l.test") as c:
        r = c.post(f"/templates/{TEMPLATE}/generate", json={"inputs": inputs, "lang": "en"})
        assert r.status_code == 200, r.text


def test_each_call_is_one_row_with_its_user_key_and_feature(lenv: LedgerEnv) -> None:
    rows = lenv.rows()
    api = [r for r in rows if r.feature == "api"]
    assert len(api) == 4
    templated = [r for r in rows if r.feature == f"template:{TEMPLATE}"]
    assert templated and all(r.status == "ok" for r in templated)

    async def keys() -> dict[uuid.UUID, uuid.UUID]:
        async with system_session(lenv.server.state.sessions) as s:
            q = select(ApiKey.id, ApiKey.user_id).where(ApiKey.tenant_id == lenv.tenant_id)
            return {kid: uid for kid, uid in (await s.execute(q)).all()}

    key_users = lenv.server.call(keys())
    for r in rows:
        assert r.key_id in key_users and r.user_id == key_users[r.key_id]
        assert r.event_id is not None and r.request_id
        assert r.cost > 0 and r.tokens_in > 0 and r.cache_hit is False
    assert len({r.user_id for r in api}) == 2
    assert sum(r.stream for r in api) == 1


def test_costs_by_feature_match_the_ledger(lenv: LedgerEnv) -> None:
    rows = lenv.rows()
    with lenv.client("dev@l.test") as c:
        body = c.get("/usage/costs", params={"group_by": "feature"}).json()
    assert body["currency"] == "USD" and body["group_by"] == "feature"
    by_key = {d["key"]: d for d in body["data"]}
    expected = {f: sum((r.cost for r in rows if r.feature == f), Decimal(0)) for f in by_key}
    assert {k: Decimal(d["cost"]) for k, d in by_key.items()} == expected
    assert set(by_key) == {"api", f"template:{TEMPLATE}"}
    assert by_key["api"]["requests"] == 4
    assert Decimal(body["total_cost"]) == sum((r.cost for r in rows), Decimal(0))


def test_csv_export_streams_a_header_and_rows_and_is_audited(lenv: LedgerEnv) -> None:
    with lenv.client("dev@l.test") as c:
        by_accept = c.get(
            "/usage/costs", params={"group_by": "user"}, headers={"Accept": "text/csv"}
        )
        by_param = c.get("/usage/costs", params={"group_by": "deployment", "format": "csv"})
    assert by_accept.headers["content-type"].startswith("text/csv")
    assert "attachment" in by_accept.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(by_accept.text)))
    assert list(table[0]) == ["user", "requests", "tokens_in", "tokens_out", "cost_usd"]
    assert len(table) == 2  # the developer and the admin
    deployments = list(csv.reader(io.StringIO(by_param.text)))
    assert deployments[0][0] == "deployment" and deployments[1][0] == "fake-openai"
    with lenv.client("adm@l.test") as c:
        log = c.get("/audit", params={"limit": 5}).json()
    exports = [e for e in log["data"] if e["action"] == "usage.export"]
    assert {e["target"] for e in exports} >= {"user", "deployment"}


def test_raw_events_stream_as_csv(lenv: LedgerEnv) -> None:
    rows = lenv.rows()
    with lenv.client("dev@l.test") as c:
        r = c.get("/usage/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert {t["event_id"] for t in table} == {str(e.event_id) for e in rows}
    assert sum(Decimal(t["cost_usd"]) for t in table) == sum((e.cost for e in rows), Decimal(0))
    with lenv.client("view@l.test") as c:
        assert c.get("/usage/events").status_code == 403


def test_active_users_and_concentration(lenv: LedgerEnv) -> None:
    rows = lenv.rows()
    per_user: dict[uuid.UUID | None, Decimal] = {}
    for r in rows:
        per_user[r.user_id] = per_user.get(r.user_id, Decimal(0)) + r.cost
    with lenv.client("dev@l.test") as c:
        active = c.get("/usage/active-users").json()
        top = c.get("/usage/concentration", params={"top_percent": "50"}).json()
    assert active["active_users"] == 2
    total = sum(per_user.values(), Decimal(0))
    assert Decimal(active["total_cost"]) == total
    assert Decimal(active["cost_per_active_user"]) == (total / 2).quantize(Decimal("1e-10"))
    assert (top["users"], top["top_users"]) == (2, 1)
    assert Decimal(top["top_cost"]) == max(per_user.values())


def test_reports_refuse_bad_input_and_unprivileged_callers(lenv: LedgerEnv) -> None:
    with lenv.client("view@l.test") as c:
        denied = c.get("/usage/costs")
        assert denied.status_code == 403
        assert "usage:read" in denied.json()["error"]["message"]
    with lenv.client("dev@l.test") as c:
        bad_group = c.get("/usage/costs", params={"group_by": "tenant"})
        assert bad_group.status_code == 422 and bad_group.json()["error"]["param"] == "group_by"
        bad_month = c.get("/usage/active-users", params={"month": "2026-13"})
        assert bad_month.status_code == 400 and "month" in bad_month.json()["error"]["message"]
        bad_from = c.get("/usage/costs", params={"from": "last tuesday"})
        assert bad_from.status_code == 400 and "from" in bad_from.json()["error"]["message"]
        bad_top = c.get("/usage/concentration", params={"top_percent": "0"})
        assert bad_top.status_code == 422
        assert c.get("/audit").status_code == 403  # developers do not read the audit log


def test_audit_log_pages_newest_first(lenv: LedgerEnv) -> None:
    with lenv.client("adm@l.test") as c:
        first = c.get("/audit", params={"limit": 2}).json()
        assert first["has_more"] and len(first["data"]) == 2
        seqs = [e["seq"] for e in first["data"]]
        assert seqs == sorted(seqs, reverse=True)
        rest = c.get("/audit", params={"limit": 500, "before": first["next_before"]}).json()
    assert [e["seq"] for e in rest["data"]][-1] == 1
    assert not rest["has_more"]
    actions = {e["action"] for e in first["data"] + rest["data"]}
    assert {"tenant.create", "member.add", "key.create"} <= actions


def test_usage_metrics_have_bounded_labels(lenv: LedgerEnv) -> None:
    lenv.rows()  # flushed: counted
    text = httpx.get(lenv.server.base_url + "/metrics").text
    series = {
        tuple(sorted(s.labels.items()))
        for family in text_string_to_metric_families(text)
        if family.name in ("polymodal_tokens", "polymodal_cost_usd")
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert series
    kinds = {dict(s)["feature_kind"] for s in series}
    assert kinds == {"api", "template"} and kinds <= FEATURE_KINDS
    assert {dict(s)["plan"] for s in series} == {"pro"}
    assert {dict(s)["deployment"] for s in series} == {"fake-openai"}
