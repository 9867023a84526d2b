"""An external OpenID Connect issuer, run here on loopback: polymodal verifies its tokens
from its JWKS (fetched over real HTTP, cached) and maps their claims to tenant and role."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from polymodal.tenancy import admin
from tests.conftest import DatabaseTarget
from tests.live import LiveServer
from tests.support import free_port

AUDIENCE = "polymodal-oidc-test"


class Issuer:
    """A minimal identity provider: one RSA key, its JWKS at the standard path."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "idp-" + uuid.uuid4().hex[:8]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.jwks_hits = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                issuer.jwks_hits += 1
                jwk = json.loads(RSAAlgorithm.to_jwk(issuer.key.public_key()))
                body = json.dumps(
                    {"keys": [{**jwk, "kid": issuer.kid, "alg": "RS256", "use": "sig"}]}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token(self, key: Any = None, kid: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "idp-user-42",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(
            body, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid}
        )


@pytest.fixture(scope="module")
def idp() -> Iterator[Issuer]:
    issuer = Issuer()
    issuer.thread.start()
    try:
        yield issuer
    finally:
        issuer.server.shutdown()
        issuer.server.server_close()


@pytest.fixture(scope="module")
def oidc_server(migrated_db: DatabaseTarget, idp: Issuer) -> Iterator[tuple[LiveServer, str, str]]:
    settings = migrated_db.settings(oidc_issuer=idp.url, oidc_audience=AUDIENCE)
    with LiveServer(settings, {}) as server:
        name = f"oidc-{uuid.uuid4().hex[:8]}"
        tenant = server.call(admin.create_tenant(server.state.sessions, name=name, actor="t"))
        yield server, name, str(tenant.id)


def _me(server: LiveServer, token: str) -> httpx.Response:
    return httpx.get(
        server.base_url + "/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_external_token_maps_to_tenant_and_role(
    oidc_server: tuple[LiveServer, str, str], idp: Issuer
) -> None:
    server, name, tenant_id = oidc_server
    hits = idp.jwks_hits
    me = _me(server, idp.token(tenant=name, role="developer"))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["tenant_id"] == tenant_id and body["roles"] == ["developer"]
    assert body["user_id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, f"{idp.url}|idp-user-42"))
    by_id = _me(server, idp.token(tenant=tenant_id, sub="another"))
    assert by_id.json()["roles"] == ["member"]  # no role claim: the default
    owner = _me(server, idp.token(tenant=name, role="owner"))
    assert owner.json()["roles"] == ["admin"]  # never owner from outside
    scoped = _me(server, idp.token(tenant=name, role="admin", scope="openid email keys:read"))
    assert scoped.json()["scopes"] == ["keys:read"]
    assert idp.jwks_hits - hits <= 1  # the JWKS is cached, not fetched per request


def test_external_tokens_are_checked(oidc_server: tuple[LiveServer, str, str], idp: Issuer) -> None:
    server, name, _ = oidc_server
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    cases = {
        "unknown_tenant": idp.token(tenant="no-such-tenant"),
        "invalid_token": idp.token(tenant=name, role="superuser"),
        "invalid_audience": idp.token(tenant=name, aud="another-app"),
        "token_expired": idp.token(tenant=name, iat=now - 900, exp=now - 600),
        "invalid_signature": idp.token(key=stranger, tenant=name),
        "unknown_key": idp.token(kid="not-published", tenant=name),
    }
    for code, token in cases.items():
        response = _me(server, token)
        assert response.status_code == 401, (code, response.text)
        assert _code(response) == code, (code, response.text)
    # An HMAC token claiming the external issuer: symmetric algorithms are never accepted.
    forged = jwt.encode(
        {"iss": idp.url, "aud": AUDIENCE, "sub": "x", "exp": now + 60, "tenant": name},
        "secret-the-attacker-knows-" + "x" * 16,
        algorithm="HS256",
        headers={"kid": idp.kid},
    )
    assert _code(_me(server, forged)) == "invalid_algorithm"


def test_external_token_cannot_reach_another_tenant(
    oidc_server: tuple[LiveServer, str, str], idp: Issuer
) -> None:
    server, name, tenant_id = oidc_server
    other = server.call(admin.create_tenant(server.state.sessions, name=name + "-b", actor="t"))
    token = idp.token(tenant=name, role="admin")
    listed = httpx.get(
        server.base_url + "/v1/members", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert listed.status_code == 200 and listed.json()["data"] == []
    assert str(other.id) != tenant_id
