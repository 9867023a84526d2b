"""API keys: stored only as a hash, authenticate, and stop working when revoked or expired."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.app import create_app
from polymodal.db.models import ApiKey
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import Unauthenticated
from polymodal.tenancy import admin
from polymodal.tenancy.auth import KeyAuthenticator
from polymodal.tenancy.keys import hash_secret, parse_key
from tests.conftest import DatabaseTarget


async def _tenant_with_key(
    sessions: async_sessionmaker[AsyncSession], **key_args: object
) -> admin.IssuedKey:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await admin.create_tenant(sessions, name=name, actor="test")
    await admin.add_user(
        sessions, tenant=name, email=f"dev@{name}.test", role="developer", actor="test"
    )
    return await admin.issue_key(
        sessions,
        tenant=name,
        email=f"dev@{name}.test",
        actor="test",
        **key_args,  # type: ignore[arg-type]
    )


async def test_key_is_stored_only_as_a_hash(sessions: async_sessionmaker[AsyncSession]) -> None:
    issued = await _tenant_with_key(sessions)
    parts = parse_key(issued.secret)
    assert parts is not None
    async with tenant_session(sessions, issued.tenant_id) as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.id == issued.id))).scalar_one()
        values = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert row.secret_hash == hash_secret(parts.secret)
    assert not any(parts.secret in v or issued.secret in v for v in values)


async def test_key_authenticates_to_its_tenant(sessions: async_sessionmaker[AsyncSession]) -> None:
    issued = await _tenant_with_key(sessions, scopes=["chat"])
    auth = KeyAuthenticator(sessions, cache_ttl_s=5)
    principal = await auth.authenticate(f"Bearer {issued.secret}")
    assert principal.tenant_id == issued.tenant_id
    assert principal.key_id == issued.id
    assert {r.value for r in principal.roles} == {"developer"}
    assert principal.scopes == frozenset({"chat"})


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic abc", "Bearer ", "Bearer not-a-key", "Bearer pm_" + "a" * 56],
)
async def test_missing_malformed_or_unknown_key_is_rejected(
    sessions: async_sessionmaker[AsyncSession], header: str | None
) -> None:
    auth = KeyAuthenticator(sessions, cache_ttl_s=5)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(header)


async def test_wrong_secret_with_a_real_prefix_is_rejected(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    issued = await _tenant_with_key(sessions)
    tampered = issued.secret[:-4] + ("AAAA" if not issued.secret.endswith("AAAA") else "BBBB")
    auth = KeyAuthenticator(sessions, cache_ttl_s=5)
    await auth.authenticate(f"Bearer {issued.secret}")  # warm the cache
    with pytest.raises(Unauthenticated):
        await auth.authenticate(f"Bearer {tampered}")


async def test_revoked_key_is_rejected_within_the_cache_bound(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = [0.0]
    auth = KeyAuthenticator(sessions, cache_ttl_s=5, clock=lambda: now[0])
    issued = await _tenant_with_key(sessions)
    await auth.authenticate(f"Bearer {issued.secret}")
    await admin.revoke_key(sessions, tenant=str(issued.tenant_id), key_id=issued.id, actor="test")
    # Inside the documented bound the cached entry may still answer ...
    await auth.authenticate(f"Bearer {issued.secret}")
    # ... and past it the revocation holds.
    now[0] += 5.01
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(f"Bearer {issued.secret}")


async def test_expired_key_is_rejected(sessions: async_sessionmaker[AsyncSession]) -> None:
    issued = await _tenant_with_key(sessions, expires_in=timedelta(milliseconds=1))
    auth = KeyAuthenticator(sessions, cache_ttl_s=0)
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authenticate(f"Bearer {issued.secret}")


@pytest.fixture
async def client(migrated_db: DatabaseTarget) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(migrated_db.settings(auth_cache_ttl_s=0))
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def test_http_401_bodies_for_each_failure(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    good = await _tenant_with_key(sessions)
    ok = await client.get("/v1/me", headers={"Authorization": f"Bearer {good.secret}"})
    assert ok.status_code == 200
    assert ok.json()["tenant_id"] == str(good.tenant_id)

    expired = await _tenant_with_key(sessions, expires_in=timedelta(milliseconds=1))
    revoked = await _tenant_with_key(sessions)
    await admin.revoke_key(sessions, tenant=str(revoked.tenant_id), key_id=revoked.id, actor="t")
    cases = {
        "missing_api_key": {},
        "malformed_authorization": {"Authorization": "Token abc"},
        "invalid_api_key": {"Authorization": "Bearer pm_zzzzzzzzzzzz_" + "x" * 43},
        "expired_api_key": {"Authorization": f"Bearer {expired.secret}"},
        "revoked_api_key": {"Authorization": f"Bearer {revoked.secret}"},
    }
    for code, headers in cases.items():
        r = await client.get("/v1/me", headers=headers)
        assert r.status_code == 401, code
        assert r.json()["error"]["code"] == code
        assert r.json()["error"]["type"] == "authentication_error"


async def test_concurrent_callers_share_one_key_lookup(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """When a busy key's cache entry expires, the callers that arrive together wait for
    one database lookup instead of each making their own."""
    issued = await _tenant_with_key(sessions)
    now = [1000.0]
    auth = KeyAuthenticator(sessions, cache_ttl_s=5, clock=lambda: now[0])
    lookups: list[str] = []
    real_load = auth._load

    async def counting_load(prefix: str) -> object:
        lookups.append(prefix)
        return await real_load(prefix)

    auth._load = counting_load  # type: ignore[method-assign,assignment]
    for _round in range(2):  # a cold cache, then an expired entry
        principals = await asyncio.gather(
            *(auth.authenticate(f"Bearer {issued.secret}") for _ in range(32))
        )
        assert {p.key_id for p in principals} == {issued.id}
        now[0] += 6  # past the TTL
    assert len(lookups) == 2

    # A caller cancelled while the lookup runs does not cancel it for the others.
    now[0] += 6
    first = asyncio.ensure_future(auth.authenticate(f"Bearer {issued.secret}"))
    second = asyncio.ensure_future(auth.authenticate(f"Bearer {issued.secret}"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).key_id == issued.id
    assert len(lookups) == 3
