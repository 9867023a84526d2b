"""Every forged, stale or misdirected token gets 401 naming what is wrong, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.tenancy.conftest import IdEnv


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(ident: IdEnv, token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _sign(ident: IdEnv, claims: dict[str, Any], **headers: Any) -> str:
    """Sign with the server's real current key: only the claims are wrong."""
    key = ident.server.call(ident.server.state.identity.ring.signing_key())
    return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid, **headers})


def _status(ident: IdEnv, token: str) -> tuple[int, str]:
    with ident.client(token) as c:
        response = c.get("/v1/me")
    code = response.json()["error"]["code"] if response.status_code != 200 else ""
    return response.status_code, code


@pytest.fixture
def good(ident: IdEnv) -> str:
    t = ident.tenant(["developer"])
    return ident.token(t.members["developer"].email)


def test_the_untampered_token_works(ident: IdEnv, good: str) -> None:
    assert _status(ident, good) == (200, "")


def test_alg_none_is_refused(ident: IdEnv, good: str) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": jwt.get_unverified_header(good)["kid"]}
    forged = f"{_b64(json.dumps(header).encode())}.{good.split('.')[1]}."
    assert _status(ident, forged) == (401, "invalid_algorithm")


def test_hs256_signed_with_the_public_key_is_refused(ident: IdEnv, good: str) -> None:
    """HS/RS confusion: an HMAC 'signature' keyed with the published public key."""
    key = ident.server.call(ident.server.state.identity.ring.signing_key())
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{good.split('.')[1]}"
    pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with ident.client() as c:
        jwk = next(k for k in c.get("/.well-known/jwks.json").json()["keys"] if k["kid"] == key.kid)
    for secret in (pem, json.dumps(jwk).encode(), base64.urlsafe_b64decode(jwk["x"] + "==")):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert _status(ident, f"{signing_input}.{_b64(mac)}") == (401, "invalid_algorithm")


def test_expired_token(ident: IdEnv, good: str) -> None:
    claims = _claims(ident, good)
    claims.update(iat=int(time.time()) - 3600, exp=int(time.time()) - 120)
    assert _status(ident, _sign(ident, claims)) == (401, "token_expired")


def test_wrong_audience_and_issuer(ident: IdEnv, good: str) -> None:
    claims = _claims(ident, good)
    assert _status(ident, _sign(ident, {**claims, "aud": "someone-else"})) == (
        401,
        "invalid_audience",
    )
    assert _status(ident, _sign(ident, {**claims, "iss": "https://evil.example"})) == (
        401,
        "invalid_issuer",
    )


def test_tampered_payload_or_signature(ident: IdEnv, good: str) -> None:
    header, payload, signature = good.split(".")
    claims = _claims(ident, good)
    claims["roles"] = ["owner"]
    elevated = _b64(json.dumps(claims).encode())
    assert _status(ident, f"{header}.{elevated}.{signature}") == (401, "invalid_signature")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert _status(ident, f"{header}.{payload}.{flipped}") == (401, "invalid_signature")


def test_unknown_kid_and_missing_kid(ident: IdEnv, good: str) -> None:
    claims = _claims(ident, good)
    key = ident.server.call(ident.server.state.identity.ring.signing_key())
    unknown = jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": "nope"})
    assert _status(ident, unknown) == (401, "unknown_key")
    bare = jwt.encode(claims, key.private, algorithm=key.alg)
    assert _status(ident, bare)[0] == 401


def test_a_forged_tenant_claim_is_refused(ident: IdEnv, good: str) -> None:
    """Signed properly but naming another tenant than its session's: no such session."""
    other = ident.tenant(["owner"])
    claims = {**_claims(ident, good), "tid": other.id}
    assert _status(ident, _sign(ident, claims)) == (401, "token_revoked")


def test_token_of_a_disabled_or_deleted_user(ident: IdEnv) -> None:
    t = ident.tenant(["member", "viewer"])
    grants = ident.server.state.identity.grants
    for role, status in (("member", "disabled"), ("viewer", "deleted")):
        email = t.members[role].email
        token = ident.token(email)
        assert _status(ident, token) == (200, "")
        ident.server.call(grants.set_user_status(email=email, status=status))
        assert _status(ident, token) == (401, f"user_{status}")
        assert _status(ident, t.members[role].key) == (401, f"user_{status}")  # API keys too
        refused = ident.login(email, expect=403).json()["error"]
        assert refused["code"] == f"user_{status}" and status in refused["message"]


def test_token_of_a_removed_member(ident: IdEnv) -> None:
    t = ident.tenant(["admin", "member"])
    member = t.members["member"]
    tokens = ident.login(member.email).json()
    with ident.client(ident.token(t.members["admin"].email)) as c:
        assert c.delete(f"/v1/members/{member.user_id}").status_code == 204
    assert _status(ident, tokens["access_token"]) == (401, "token_revoked")
    with ident.client() as c:
        again = c.post(
            "/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
    assert again.status_code == 401
    # The removed member's API key no longer carries any role either.
    with ident.client(member.key) as c:
        assert (
            c.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
            ).status_code
            == 403
        )


def test_garbage_credentials(ident: IdEnv) -> None:
    for token in ("a.b.c", "not-a-token", f"{uuid.uuid4()}.{uuid.uuid4()}.x"):
        assert _status(ident, token)[0] == 401
    with ident.client() as c:
        assert c.get("/v1/me").json()["error"]["code"] == "missing_api_key"
        basic = c.get("/v1/me", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert basic.json()["error"]["code"] == "malformed_authorization"
