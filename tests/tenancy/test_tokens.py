"""Password, refresh and client-credentials grants over real HTTP; refresh rotation with
reuse detection; revocation; the JWKS."""

from __future__ import annotations

import jwt

from tests.tenancy.conftest import IdEnv


def test_password_grant_gives_a_working_access_token(ident: IdEnv) -> None:
    t = ident.tenant(["developer"])
    dev = t.members["developer"]
    body = ident.login(dev.email).json()
    assert body["token_type"] == "Bearer" and body["tenant_id"] == t.id
    assert body["refresh_token"].startswith("pmr_")
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["tid"] == t.id and claims["sub"] == dev.user_id
    assert claims["roles"] == ["developer"]
    with ident.client(body["access_token"]) as c:
        me = c.get("/v1/me").json()
    assert me == {
        "tenant_id": t.id,
        "user_id": dev.user_id,
        "key_id": None,
        "roles": ["developer"],
        "scopes": [],
    }
