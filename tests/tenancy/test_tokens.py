"""Password, refresh and client-credentials grants over real HTTP; refresh rotation with
reuse detection; revocation; the JWKS verifies our tokens with an independent client."""

from __future__ import annotations

import uuid

import httpx
import jwt
from sqlalchemy import select

from polymodal.db.models import AuditEvent
from polymodal.db.scope import system_session
from tests.tenancy.conftest import IdEnv


def _refresh(ident: IdEnv, token: str) -> httpx.Response:
    with ident.client() as c:
        return c.post(
            "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}
        )


def _actions(ident: IdEnv, tenant_id: str) -> list[str]:
    async def rows() -> list[str]:
        async with system_session(ident.server.state.sessions) as s:
            found = await s.execute(
                select(AuditEvent.action)
                .where(AuditEvent.tenant_id == uuid.UUID(tenant_id))
                .order_by(AuditEvent.id)
            )
            return list(found.scalars())

    return ident.server.call(rows())


def _me(ident: IdEnv, token: str) -> httpx.Response:
    with ident.client(token) as c:
        return c.get("/v1/me")


def test_password_grant_gives_a_working_access_token(ident: IdEnv) -> None:
    t = ident.tenant(["developer"])
    dev = t.members["developer"]
    response = ident.login(dev.email)
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["tenant_id"] == t.id
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("pmr_")
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["tid"] == t.id and claims["sub"] == dev.user_id
    assert claims["roles"] == ["developer"]
    assert claims["exp"] - claims["iat"] == 900
    assert _me(ident, body["access_token"]).json() == {
        "tenant_id": t.id,
        "user_id": dev.user_id,
        "key_id": None,
        "roles": ["developer"],
        "scopes": [],
    }


def test_jwks_verifies_tokens_independently(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    token = ident.token(t.members["member"].email)
    with ident.client() as c:
        jwks = c.get("/.well-known/jwks.json").json()
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid in [k["kid"] for k in jwks["keys"]]
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        audience="polymodal-api",
        issuer="polymodal",
    )
    assert claims["tid"] == t.id


def test_refresh_rotates_and_reuse_revokes_the_family(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    first = ident.login(t.members["member"].email).json()
    second = _refresh(ident, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert _me(ident, rotated["access_token"]).status_code == 200
    third = _refresh(ident, rotated["refresh_token"]).json()

    # The first refresh token is presented again: a copy is in someone else's hands.
    reused = _refresh(ident, first["refresh_token"])
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "refresh_token_reused"
    # ... so the whole family dies: the newest refresh token and every access token.
    latest = _refresh(ident, third["refresh_token"])
    assert latest.status_code == 401
    assert latest.json()["error"]["code"] == "refresh_token_revoked"
    for access in (first["access_token"], rotated["access_token"], third["access_token"]):
        denied = _me(ident, access)
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "token_revoked"


def test_other_sessions_survive_a_reuse(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    email = t.members["member"].email
    laptop, phone = ident.login(email).json(), ident.login(email).json()
    _refresh(ident, laptop["refresh_token"])
    assert _refresh(ident, laptop["refresh_token"]).status_code == 401
    assert _me(ident, phone["access_token"]).status_code == 200
    assert _refresh(ident, phone["refresh_token"]).status_code == 200


def test_revoke_ends_the_session(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    tokens = ident.login(t.members["member"].email).json()
    with ident.client() as c:
        assert c.post("/v1/auth/revoke", data={"token": tokens["refresh_token"]}).status_code == 200
        # RFC 7009: an unknown token is not an error.
        assert c.post("/v1/auth/revoke", data={"token": "pmr_nonsense"}).status_code == 200
    assert _me(ident, tokens["access_token"]).json()["error"]["code"] == "token_revoked"
    assert _refresh(ident, tokens["refresh_token"]).json()["error"]["code"] == (
        "refresh_token_revoked"
    )


def test_revoking_an_access_token_ends_its_session(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    tokens = ident.login(t.members["member"].email).json()
    with ident.client() as c:
        assert c.post("/v1/auth/revoke", data={"token": tokens["access_token"]}).status_code == 200
    assert _me(ident, tokens["access_token"]).status_code == 401
    assert _refresh(ident, tokens["refresh_token"]).status_code == 401


def test_client_credentials_for_a_service_account(ident: IdEnv) -> None:
    t = ident.tenant(["admin"])
    admin_token = ident.token(t.members["admin"].email)
    with ident.client(admin_token) as c:
        created = c.post(
            "/v1/service-accounts",
            json={"name": "ci", "role": "developer", "scopes": ["models:use", "keys:read"]},
        )
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["client_id"].startswith("pmc_") and account["client_secret"]
    form = {
        "grant_type": "client_credentials",
        "client_id": account["client_id"],
        "client_secret": account["client_secret"],
    }
    with ident.client() as c:
        granted = c.post("/v1/auth/token", data=form)
        assert granted.status_code == 200, granted.text
        assert "refresh_token" not in granted.json()
        assert granted.json()["scope"] == "keys:read models:use"
        # HTTP Basic works too (RFC 6749 section 2.3.1).
        basic = c.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(account["client_id"], account["client_secret"]),
        )
        assert basic.status_code == 200, basic.text
        wrong = c.post("/v1/auth/token", data={**form, "client_secret": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_client"
    token = granted.json()["access_token"]
    assert _actions(ident, t.id).count("auth.client_credentials") == 2
    me = _me(ident, token).json()
    assert me["tenant_id"] == t.id and me["roles"] == ["developer"]
    assert me["scopes"] == ["keys:read", "models:use"]
    with ident.client(token) as c:
        assert c.get("/v1/keys").status_code == 200
        assert c.get("/v1/members").status_code == 403  # not in its scopes (nor its role)
    with ident.client(admin_token) as c:
        assert c.delete(f"/v1/service-accounts/{account['id']}").status_code == 204
    assert _me(ident, token).json()["error"]["code"] == "token_revoked"
    with ident.client() as c:
        assert c.post("/v1/auth/token", data=form).status_code == 401


def test_a_person_in_several_tenants_picks_one(ident: IdEnv) -> None:
    a = ident.tenant(["developer"])
    b = ident.tenant(["owner"])
    email = a.members["developer"].email
    owner_b = ident.token(b.members["owner"].email)
    with ident.client(owner_b) as c:
        invite = c.post("/v1/members", json={"email": email, "role": "viewer"}).json()
    with ident.client() as c:
        accepted = c.post(
            "/v1/auth/invitations/accept",
            json={"token": invite["token"], "password": "correct horse battery staple"},
        )
    assert accepted.status_code == 201, accepted.text
    several = ident.login(email, expect=422).json()["error"]
    assert several["code"] == "tenant_required" and a.name in several["message"]
    token_a = ident.login(email, tenant=a.name).json()
    token_b = ident.login(email, tenant=b.id).json()
    assert token_a["tenant_id"] == a.id and token_b["tenant_id"] == b.id
    assert _me(ident, token_b["access_token"]).json()["roles"] == ["viewer"]
    # The tenant-A token acts in A only: it lists A's members, never B's.
    with ident.client(token_a["access_token"]) as c:
        assert c.get("/v1/members").status_code == 403  # a developer may not list members
        keys = c.get("/v1/keys").json()["data"]
    assert {k["user_id"] for k in keys} == {a.members["developer"].user_id}
    outsider = ident.login(email, tenant="no-such-tenant", expect=403).json()["error"]
    assert outsider["code"] == "not_a_member" and "no-such-tenant" in outsider["message"]


def test_a_login_may_ask_for_fewer_permissions(ident: IdEnv) -> None:
    t = ident.tenant(["admin"])
    email = t.members["admin"].email
    narrow = ident.login(email, scope="models:use members:read").json()
    assert narrow["scope"] == "members:read models:use"
    with ident.client(narrow["access_token"]) as c:
        assert c.get("/v1/members").status_code == 200
        assert c.get("/v1/keys").status_code == 403  # the role allows it, the token does not
    beyond = ident.login(email, scope="owners:write", expect=403).json()["error"]
    assert beyond["code"] == "invalid_scope" and "owners:write" in beyond["message"]
    unknown = ident.login(email, scope="models:fly", expect=422).json()["error"]
    assert unknown["param"] == "scope" and "models:fly" in unknown["message"]
    # Refreshing keeps the login's narrowing: a refresh token never widens a session.
    with ident.client() as c:
        refreshed = c.post(
            "/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": narrow["refresh_token"]},
        ).json()
    assert refreshed["scope"] == "members:read models:use"
    with ident.client(refreshed["access_token"]) as c:
        assert c.get("/v1/keys").status_code == 403
