"""Mass assignment: fields that say who owns what or how much may be spent are never
taken from a request body. Write bodies forbid unknown fields (422 naming the field) and
nothing is written; the OAuth2 form ignores what it does not define."""

from __future__ import annotations

import jwt
import pytest

from tests.tenancy.conftest import IdEnv

FOREIGN_TENANT = "00000000-0000-4000-8000-000000000001"
SMUGGLED = [
    {"tenant_id": FOREIGN_TENANT},
    {"owner_id": FOREIGN_TENANT},
    {"user_id": FOREIGN_TENANT},
    {"monthly_limit_usd": 0},
    {"requests_per_minute": 1_000_000},
    {"plan": "enterprise"},
]


def _counts(ident: IdEnv, token: str) -> tuple[int, int, int, int]:
    with ident.client(token) as c:
        members = c.get("/v1/members").json()
        keys = c.get("/v1/keys").json()["data"]
        accounts = c.get("/v1/service-accounts").json()["data"]
    return len(members["data"]), len(members["invitations"]), len(keys), len(accounts)


@pytest.mark.parametrize("extra", SMUGGLED, ids=lambda e: next(iter(e)))
def test_smuggled_fields_are_rejected_and_nothing_is_written(
    ident: IdEnv, extra: dict[str, object]
) -> None:
    t = ident.tenant(["owner", "viewer"])
    owner = ident.token(t.members["owner"].email)
    before = _counts(ident, owner)
    writes = [
        ("POST", "/v1/members", {"email": "m@x.test", "role": "viewer"}),
        ("PATCH", f"/v1/members/{t.members['viewer'].user_id}", {"role": "member"}),
        ("POST", "/v1/keys", {"name": "k"}),
        ("POST", "/v1/service-accounts", {"name": "sa", "role": "viewer"}),
    ]
    field = next(iter(extra))
    with ident.client(owner) as c:
        for method, path, body in writes:
            response = c.request(method, path, json={**body, **extra})
            assert response.status_code == 422, (method, path, response.text)
            error = response.json()["error"]
            assert error["param"] == field and field in error["message"], error
        viewer = next(m for m in c.get("/v1/members").json()["data"] if m["role"] == "viewer")
    assert viewer["user_id"] == t.members["viewer"].user_id  # the PATCH did not apply
    assert _counts(ident, owner) == before


def test_role_cannot_ride_along_on_a_key(ident: IdEnv) -> None:
    t = ident.tenant(["developer"])
    with ident.client(ident.token(t.members["developer"].email)) as c:
        response = c.post("/v1/keys", json={"name": "k", "role": "owner"})
        assert response.status_code == 422 and response.json()["error"]["param"] == "role"
        accept = c.post(
            "/v1/auth/invitations/accept",
            json={"token": "pmi_x", "password": "a long password", "role": "owner"},
        )
        assert accept.status_code == 422 and accept.json()["error"]["param"] == "role"


def test_the_token_form_ignores_fields_it_does_not_define(ident: IdEnv) -> None:
    t = ident.tenant(["viewer"])
    other = ident.tenant(["owner"])
    form = {
        "grant_type": "password",
        "username": t.members["viewer"].email,
        "password": "correct horse battery staple",
        "tenant_id": other.id,
        "role": "owner",
        "roles": "owner",
    }
    with ident.client() as c:
        response = c.post("/v1/auth/token", data=form)
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["tid"] == t.id and claims["roles"] == ["viewer"]
