"""Members, invitations, roles and keys through the API: who may grant what, the last
owner, secrets shown once, and an audit row for each change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from polymodal.db.models import AuditEvent
from polymodal.db.models_identity import Invitation
from polymodal.db.scope import system_session
from tests.tenancy.conftest import PASSWORD, IdEnv, Tenant


def _audit(ident: IdEnv, tenant: Tenant) -> list[tuple[str, str, dict[str, object]]]:
    async def rows() -> list[tuple[str, str, dict[str, object]]]:
        async with system_session(ident.server.state.sessions) as s:
            found = await s.execute(
                select(AuditEvent.action, AuditEvent.target, AuditEvent.data)
                .where(AuditEvent.tenant_id == uuid.UUID(tenant.id))
                .order_by(AuditEvent.id)
            )
            return [(a, t, dict(d)) for a, t, d in found.all()]

    return ident.server.call(rows())


def _accept(ident: IdEnv, token: str, password: str = PASSWORD) -> httpx.Response:
    with ident.client() as c:
        return c.post("/v1/auth/invitations/accept", json={"token": token, "password": password})


def test_invite_accept_and_log_in(ident: IdEnv) -> None:
    t = ident.tenant(["admin"])
    with ident.client(ident.token(t.members["admin"].email)) as c:
        invited = c.post(
            "/v1/members", json={"email": "New.Person@Example.test", "role": "developer"}
        )
        assert invited.status_code == 201, invited.text
        invitation = invited.json()
        assert (
            invitation["token"].startswith("pmi_")
            and invitation["email"] == "new.person@example.test"
        )
        pending = c.get("/v1/members").json()["invitations"]
        assert [i["email"] for i in pending] == ["new.person@example.test"]
        assert "token" not in pending[0]  # shown once, when made
    weak = _accept(ident, invitation["token"], password="short")
    assert weak.status_code == 422 and weak.json()["error"]["param"] == "password"
    joined = _accept(ident, invitation["token"])
    assert joined.status_code == 201, joined.text
    assert joined.json()["role"] == "developer" and joined.json()["tenant_id"] == t.id
    again = _accept(ident, invitation["token"])
    assert again.status_code == 400 and again.json()["error"]["code"] == "invitation_used"
    token = ident.token("new.person@example.test")
    with ident.client(token) as c:
        assert c.get("/v1/me").json()["roles"] == ["developer"]
    actions = [a for a, _, _ in _audit(ident, t)]
    assert "member.invite" in actions and actions[-2:] == ["member.add", "auth.login"]


def test_expired_or_unknown_invitation(ident: IdEnv) -> None:
    t = ident.tenant(["owner"])
    with ident.client(ident.token(t.members["owner"].email)) as c:
        invitation = c.post("/v1/members", json={"email": "late@x.test", "role": "viewer"}).json()

    async def expire() -> None:
        async with system_session(ident.server.state.sessions) as s, s.begin():
            await s.execute(
                update(Invitation)
                .where(Invitation.email == "late@x.test", Invitation.tenant_id == uuid.UUID(t.id))
                .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
            )

    ident.server.call(expire())
    late = _accept(ident, invitation["token"])
    assert late.status_code == 400
    assert late.json()["error"]["code"] == "invitation_expired"
    assert "expired" in late.json()["error"]["message"]
    unknown = _accept(ident, "pmi_not-a-real-invitation")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "invitation_not_found"
    ident.login("late@x.test", expect=401)  # nothing was created


def test_roles_can_only_go_down_the_ladder(ident: IdEnv) -> None:
    t = ident.tenant(["owner", "admin", "developer"])
    owner = ident.token(t.members["owner"].email)
    admin = ident.token(t.members["admin"].email)
    dev_id = t.members["developer"].user_id
    owner_id = t.members["owner"].user_id
    with ident.client(admin) as c:
        grant_owner = c.patch(f"/v1/members/{dev_id}", json={"role": "owner"})
        assert grant_owner.status_code == 403
        assert "owners:write" in grant_owner.json()["error"]["message"]
        assert c.post("/v1/members", json={"email": "o@x.test", "role": "owner"}).status_code == 403
        assert c.patch(f"/v1/members/{owner_id}", json={"role": "viewer"}).status_code == 403
        assert c.delete(f"/v1/members/{owner_id}").status_code == 403
        made_admin = c.patch(f"/v1/members/{dev_id}", json={"role": "admin"})
        assert made_admin.status_code == 200 and made_admin.json()["role"] == "admin"
        bad = c.patch(f"/v1/members/{dev_id}", json={"role": "superuser"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_role"
        missing = c.patch(
            "/v1/members/00000000-0000-0000-0000-000000000000", json={"role": "member"}
        )
        assert missing.status_code == 404
        sa = c.post("/v1/service-accounts", json={"name": "x", "role": "owner"})
        assert sa.status_code == 403
    with ident.client(owner) as c:
        last = c.patch(f"/v1/members/{owner_id}", json={"role": "admin"})
        assert last.status_code == 409 and last.json()["error"]["code"] == "last_owner"
        assert c.delete(f"/v1/members/{owner_id}").json()["error"]["code"] == "last_owner"
        assert c.patch(f"/v1/members/{dev_id}", json={"role": "owner"}).status_code == 200
        # Two owners now: the first may step down.
        assert c.patch(f"/v1/members/{owner_id}", json={"role": "admin"}).status_code == 200
    changes = [(d["from"], d["to"]) for a, _, d in _audit(ident, t) if a == "member.role"]
    assert changes == [("developer", "admin"), ("admin", "owner"), ("owner", "admin")]
    # The demoted owner's token now carries the new role at once.
    with ident.client(owner) as c:
        assert c.get("/v1/me").json()["roles"] == ["admin"]


def test_keys_secret_once_scopes_and_revocation(ident: IdEnv) -> None:
    t = ident.tenant(["admin", "developer", "member"])
    dev = ident.token(t.members["developer"].email)
    with ident.client(dev) as c:
        created = c.post(
            "/v1/keys", json={"name": "ci", "scopes": ["models:use"], "expires_in_days": 30}
        )
        assert created.status_code == 201, created.text
        key = created.json()
        assert key["key"].startswith("pm_") and key["scopes"] == ["models:use"]
        listing = c.get("/v1/keys").json()["data"]
        assert key["key"] not in str(listing) and any(k["id"] == key["id"] for k in listing)
        unknown = c.post("/v1/keys", json={"scopes": ["models:fly"]})
        assert unknown.status_code == 422 and "models:fly" in unknown.json()["error"]["message"]
        beyond = c.post("/v1/keys", json={"scopes": ["members:write"]})
        assert beyond.status_code == 403 and beyond.json()["error"]["code"] == "scope_above_own"
    with ident.client(key["key"]) as c:
        chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        assert c.post("/v1/chat/completions", json=chat).status_code == 200
        assert c.get("/v1/keys").status_code == 403  # outside the key's scope
    admin_key = t.members["admin"].key
    with ident.client(dev) as c:
        theirs = next(
            k
            for k in c.get("/v1/keys").json()["data"]
            if k["user_id"] == t.members["admin"].user_id
        )
        other = c.delete(f"/v1/keys/{theirs['id']}")
        assert other.status_code == 403 and other.json()["error"]["code"] == "not_your_key"
        assert c.delete(f"/v1/keys/{key['id']}").status_code == 204
        assert c.delete(f"/v1/keys/{key['id']}").status_code == 404
    with ident.client(key["key"]) as c:
        revoked = c.get("/v1/me")
        assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "revoked_api_key"
    with ident.client(admin_key) as c:
        assert c.get("/v1/me").status_code == 200  # API keys keep working beside JWT
    with ident.client(ident.token(t.members["member"].email)) as c:
        assert c.post("/v1/keys", json={}).status_code == 403
    actions = [(a, target) for a, target, _ in _audit(ident, t)]
    assert ("key.create", key["id"]) in actions and ("key.revoke", key["id"]) in actions


def test_removed_member_audit_and_sessions(ident: IdEnv) -> None:
    t = ident.tenant(["owner", "viewer"])
    viewer = t.members["viewer"]
    ident.login(viewer.email)
    with ident.client(ident.token(t.members["owner"].email)) as c:
        assert c.delete(f"/v1/members/{viewer.user_id}").status_code == 204
        assert [m["role"] for m in c.get("/v1/members").json()["data"]] == ["owner"]
    removed = [d for a, target, d in _audit(ident, t) if a == "member.remove"]
    assert removed == [{"role": "viewer", "sessions_revoked": 1}]
    refused = ident.login(viewer.email, expect=403).json()["error"]
    assert refused["code"] == "not_a_member"
