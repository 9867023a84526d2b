"""Bad logins: clear 4xx answers naming the problem; failed logins limited per email and
client address (in-process, and in Redis shared by replicas) and written to the audit log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from polymodal.db.models import AuditEvent
from polymodal.db.scope import system_session
from polymodal.tenancy import admin
from tests.conftest import DatabaseTarget
from tests.live import LiveServer
from tests.tenancy.conftest import PASSWORD, IdEnv


def _audit(ident: IdEnv, tenant_id: str, action: str) -> list[dict[str, object]]:
    async def rows() -> list[dict[str, object]]:
        async with system_session(ident.server.state.sessions) as s:
            found = await s.execute(
                select(AuditEvent.data)
                .where(AuditEvent.tenant_id == uuid.UUID(tenant_id), AuditEvent.action == action)
                .order_by(AuditEvent.id)
            )
            return [dict(d) for d in found.scalars()]

    return ident.server.call(rows())


def test_wrong_password_then_lockout_then_audit(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    email = t.members["member"].email
    for _ in range(3):
        wrong = ident.login(email, "not the password", expect=401).json()["error"]
        assert wrong["code"] == "invalid_credentials" and "password" in wrong["message"]
    locked = ident.login(email, expect=429)  # even the right password, now
    assert locked.json()["error"]["code"] == "too_many_failed_logins"
    assert email in locked.json()["error"]["message"]
    assert int(locked.headers["retry-after"]) > 0
    failures = _audit(ident, t.id, "auth.login_failed")
    assert len(failures) == 3
    assert failures[0]["email"] == email and failures[0]["reason"] == "bad_password"
    assert failures[0]["client"] == "127.0.0.1"
    assert "not the password" not in str(failures)  # never the attempted password
    # Another person from the same address is not affected.
    other = ident.tenant(["member"])
    ident.login(other.members["member"].email)
    assert len(_audit(ident, other.id, "auth.login")) == 1


def test_a_success_resets_the_count(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    email = t.members["member"].email
    for _ in range(2):
        ident.login(email, "wrong-password-1", expect=401)
    ident.login(email)
    for _ in range(2):
        ident.login(email, "wrong-password-2", expect=401)
    ident.login(email)  # 2 + 2 failures, never 3 in a row


def test_bad_input_is_named(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    email = t.members["member"].email
    with ident.client() as c:
        missing = c.post("/v1/auth/token", data={"username": email})
        assert missing.status_code == 422 and missing.json()["error"]["param"] == "grant_type"
        odd = c.post("/v1/auth/token", data={"grant_type": "implicit"})
        assert odd.status_code == 400 and "implicit" in odd.json()["error"]["message"]
        as_json = c.post("/v1/auth/token", json={"grant_type": "password"})
        assert as_json.status_code == 400
        assert "x-www-form-urlencoded" in as_json.json()["error"]["message"]
        no_password = c.post("/v1/auth/token", data={"grant_type": "password", "username": email})
        assert no_password.json()["error"]["param"] == "password"
    unknown = ident.login("nobody@nowhere.test", expect=401).json()["error"]
    assert unknown["code"] == "invalid_credentials"  # same answer as a wrong password
    grants = ident.server.state.identity.grants
    ident.server.call(grants.set_user_status(email=email, status="locked"))
    locked = ident.login(email, expect=403).json()["error"]
    assert locked["code"] == "user_locked" and "locked" in locked["message"]
    assert _audit(ident, t.id, "auth.login_failed")[-1]["reason"] == "locked"


@pytest.fixture
def redis_pair(
    migrated_db: DatabaseTarget, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[LiveServer, LiveServer, str]]:
    settings = migrated_db.settings(
        redis_url=redis_url, redis_key_prefix=redis_prefix, login_max_failures=2
    )
    # Each replica has its own local folder (the local vector store locks its own).
    one = settings.model_copy(update={"data_dir": tmp_path / "a"})
    two = settings.model_copy(update={"data_dir": tmp_path / "b"})
    with LiveServer(one, {}) as first, LiveServer(two, {}) as second:
        state = first.state
        name = f"r-{uuid.uuid4().hex[:8]}"
        email = f"ada@{name}.test"
        first.call(admin.create_tenant(state.sessions, name=name, actor="t"))
        first.call(
            admin.add_user(state.sessions, tenant=name, email=email, role="member", actor="t")
        )
        first.call(state.identity.grants.set_password(email=email, password=PASSWORD))
        yield first, second, email


def test_failed_logins_are_counted_in_redis_across_replicas(
    redis_pair: tuple[LiveServer, LiveServer, str], redis_url: str, redis_prefix: str
) -> None:
    import httpx

    first, second, email = redis_pair

    def login(server: LiveServer, password: str) -> httpx.Response:
        form = {"grant_type": "password", "username": email, "password": password}
        return httpx.post(server.base_url + "/v1/auth/token", data=form, timeout=30)

    assert login(first, "wrong one").status_code == 401
    assert login(second, "wrong two").status_code == 401
    client = redis.Redis.from_url(redis_url)
    try:
        counters = list(client.scan_iter(match=redis_prefix + "*login-failures:*"))
        assert len(counters) == 1 and int(client.get(counters[0]) or 0) == 2
        assert 0 < int(client.ttl(counters[0])) <= 900  # login_failure_window_s
    finally:
        client.close()
    # Both replicas now refuse, even the right password.
    assert login(first, PASSWORD).status_code == 429
    assert login(second, PASSWORD).status_code == 429
