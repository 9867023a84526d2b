"""Every role against every endpoint, generated from the app's route table.

`ROUTES` classifies each route by the permission it needs (or as public, or as open to
any authenticated caller). The test fails when the app has a route this table does not
classify (or the table names a route that is gone), so a new endpoint cannot ship
without a decision. Each role then calls each endpoint with a valid request (objects
named in the path are created first, in the caller's tenant) and must get a 2xx when
`polymodal.tenancy.rbac.PERMISSIONS` grants the permission and 403 when it does not.

A few endpoints answer with a model call through machinery this suite does not set up
(chatbot replies need a retriever); for those, marked `reached`, a permitted role must
get past authorization (anything but 401/403) rather than a 2xx.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from polymodal.domain.principal import Role
from polymodal.templates.catalog import builtin_catalog
from polymodal.tenancy import admin
from polymodal.tenancy.rbac import PERMISSIONS, Permission
from tests.tenancy.conftest import ROLES, IdEnv, Tenant

P = Permission
PUBLIC = "public"
ANY = "authenticated"
CATALOG = builtin_catalog()
BUILTIN = "product-launch-email"

# (method, path) -> what it needs. Docs and probes are public by design.
ROUTES: dict[tuple[str, str], Permission | str] = {
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/.well-known/jwks.json"): PUBLIC,
    ("POST", "/v1/auth/token"): PUBLIC,
    ("POST", "/v1/auth/revoke"): PUBLIC,
    ("POST", "/v1/auth/invitations/accept"): PUBLIC,
    ("GET", "/v1/me"): ANY,
    ("GET", "/v1/models"): ANY,
    ("GET", "/v1/routing/health"): ANY,
    ("POST", "/v1/chat/completions"): P.MODELS_USE,
    ("POST", "/v1/embeddings"): P.MODELS_USE,
    # templates
    ("GET", "/v1/templates"): P.TEMPLATES_READ,
    ("GET", "/v1/templates/{template_id}"): P.TEMPLATES_READ,
    ("POST", "/v1/templates/{template_id}/render"): P.TEMPLATES_READ,
    ("POST", "/v1/templates/{template_id}/generate"): P.MODELS_USE,
    ("GET", "/v1/templates/custom"): P.TEMPLATES_READ,
    ("POST", "/v1/templates/custom"): P.TEMPLATES_WRITE,
    ("GET", "/v1/templates/custom/{template_id}"): P.TEMPLATES_READ,
    ("PUT", "/v1/templates/custom/{template_id}"): P.TEMPLATES_WRITE,
    ("DELETE", "/v1/templates/custom/{template_id}"): P.TEMPLATES_WRITE,
    ("GET", "/v1/templates/custom/{template_id}/versions"): P.TEMPLATES_READ,
    ("PUT", "/v1/templates/{template_id}/hidden"): P.TEMPLATES_WRITE,
    ("DELETE", "/v1/templates/{template_id}/hidden"): P.TEMPLATES_WRITE,
    # people and credentials
    ("GET", "/v1/members"): P.MEMBERS_READ,
    ("POST", "/v1/members"): P.MEMBERS_WRITE,
    ("PATCH", "/v1/members/{user_id}"): P.MEMBERS_WRITE,
    ("DELETE", "/v1/members/{user_id}"): P.MEMBERS_WRITE,
    ("GET", "/v1/keys"): P.KEYS_READ,
    ("POST", "/v1/keys"): P.KEYS_WRITE,
    ("DELETE", "/v1/keys/{key_id}"): P.KEYS_WRITE,
    ("GET", "/v1/service-accounts"): P.KEYS_READ,
    ("POST", "/v1/service-accounts"): P.KEYS_WRITE,
    ("DELETE", "/v1/service-accounts/{account_id}"): P.KEYS_WRITE,
    # money and governance
    ("GET", "/v1/budgets"): P.BUDGETS_READ,
    ("PUT", "/v1/budgets"): P.BUDGETS_WRITE,
    ("DELETE", "/v1/budgets"): P.BUDGETS_WRITE,
    ("GET", "/v1/keys/{key_id}/budget"): P.BUDGETS_READ,
    ("PUT", "/v1/keys/{key_id}/budget"): P.BUDGETS_WRITE,
    ("DELETE", "/v1/keys/{key_id}/budget"): P.BUDGETS_WRITE,
    ("GET", "/v1/limits"): P.BUDGETS_READ,
    ("PUT", "/v1/limits"): P.LIMITS_WRITE,
    ("GET", "/v1/keys/{key_id}/limits"): P.BUDGETS_READ,
    ("PUT", "/v1/keys/{key_id}/limits"): P.LIMITS_WRITE,
    ("GET", "/v1/usage/costs"): P.USAGE_READ,
    ("GET", "/v1/usage/events"): P.USAGE_READ,
    ("GET", "/v1/usage/active-users"): P.USAGE_READ,
    ("GET", "/v1/usage/concentration"): P.USAGE_READ,
    ("GET", "/v1/audit"): P.AUDIT_READ,
    # knowledge bases
    ("GET", "/v1/knowledge-bases"): P.KB_READ,
    ("POST", "/v1/knowledge-bases"): P.KB_WRITE,
    ("GET", "/v1/knowledge-bases/{kb_id}"): P.KB_READ,
    ("PATCH", "/v1/knowledge-bases/{kb_id}"): P.KB_WRITE,
    ("DELETE", "/v1/knowledge-bases/{kb_id}"): P.KB_WRITE,
    ("GET", "/v1/knowledge-bases/{kb_id}/documents"): P.KB_READ,
    ("POST", "/v1/knowledge-bases/{kb_id}/documents"): P.KB_WRITE,
    ("GET", "/v1/knowledge-bases/{kb_id}/documents/{doc_id}"): P.KB_READ,
    ("DELETE", "/v1/knowledge-bases/{kb_id}/documents/{doc_id}"): P.KB_WRITE,
    ("POST", "/v1/knowledge-bases/{kb_id}/search"): P.KB_READ,
    # chatbots
    ("GET", "/v1/chatbots"): P.CHATBOTS_READ,
    ("POST", "/v1/chatbots"): P.CHATBOTS_WRITE,
    ("GET", "/v1/chatbots/{chatbot_id}"): P.CHATBOTS_READ,
    ("PATCH", "/v1/chatbots/{chatbot_id}"): P.CHATBOTS_WRITE,
    ("DELETE", "/v1/chatbots/{chatbot_id}"): P.CHATBOTS_WRITE,
    ("POST", "/v1/chatbots/{chatbot_id}/chat/completions"): P.CHATBOTS_CHAT,
    ("GET", "/v1/chatbots/{chatbot_id}/conversations"): P.CHATBOTS_READ,
    ("POST", "/v1/chatbots/{chatbot_id}/conversations"): P.CHATBOTS_CHAT,
    ("GET", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}"): P.CHATBOTS_READ,
    ("DELETE", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}"): P.CHATBOTS_CHAT,
    ("POST", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}/messages"): (
        P.CHATBOTS_CHAT
    ),
}
# Answers that need a retriever this suite does not wire: past authorization is enough.
REACHED_ONLY = {
    ("POST", "/v1/chatbots/{chatbot_id}/chat/completions"),
    ("POST", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}/messages"),
}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route, through FastAPI's included routers."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        contexts = (
            route.effective_route_contexts()
            if hasattr(route, "effective_route_contexts")
            else [route]
        )
        for ctx in contexts:
            for method in getattr(ctx, "methods", None) or ["GET"]:
                if method != "HEAD":
                    found.add((method, ctx.path))
    return found


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    files: Any = None
    data: Any = None


class World:
    """Objects made by the tenant's owner so each call has something real to act on."""

    def __init__(self, ident: IdEnv, tenant: Tenant, tokens: dict[str, str]) -> None:
        self.ident = ident
        self.tenant = tenant
        self.tokens = tokens
        self._kb: str | None = None
        self._chatbot: str | None = None

    def owner(self, method: str, path: str, **kw: Any) -> Any:
        with self.ident.client(self.tokens["owner"]) as c:
            response = c.request(method, path, **kw)
        assert response.status_code < 300, (method, path, response.text)
        return response.json() if response.content else None

    def key_of(self, role: str) -> str:
        with self.ident.client(self.tokens[role]) as c:
            created = c.post("/v1/keys", json={"name": "matrix"})
        if created.status_code == 201:
            return str(created.json()["id"])
        return str(self.owner("POST", "/v1/keys", json={"name": "matrix"})["id"])

    def key_with_budget(self) -> str:
        key = self.key_of("owner")
        self.owner("PUT", f"/v1/keys/{key}/budget", json={"monthly_limit_usd": "5"})
        return key

    def fresh_member(self) -> str:
        state = self.ident.server.state
        email = f"x-{uuid.uuid4().hex[:8]}@{self.tenant.name}.test"
        user_id = self.ident.server.call(
            admin.add_user(
                state.sessions, tenant=self.tenant.name, email=email, role="viewer", actor="t"
            )
        )
        return str(user_id)

    def account(self) -> str:
        body = {"name": "matrix", "role": "viewer"}
        return str(self.owner("POST", "/v1/service-accounts", json=body)["id"])

    def custom_template(self) -> str:
        tid = f"m-{uuid.uuid4().hex[:8]}"
        self.owner("POST", "/v1/templates/custom", json={"template": definition(tid)})
        return tid

    def kb(self) -> str:
        if self._kb is None:
            self._kb = self.fresh_kb()
        return self._kb

    def fresh_kb(self) -> str:
        return str(self.owner("POST", "/v1/knowledge-bases", json={"name": _name()})["id"])

    def document(self, kb: str) -> str:
        files = {"file": ("note.txt", io.BytesIO(b"Polymodal keeps tenants apart."), "text/plain")}
        body = self.owner("POST", f"/v1/knowledge-bases/{kb}/documents", files=files)
        docs = body.get("data", [body]) if isinstance(body, dict) else body
        return str(docs[0]["id"])

    def chatbot(self) -> str:
        if self._chatbot is None:
            self._chatbot = self.fresh_chatbot()
        return self._chatbot

    def fresh_chatbot(self) -> str:
        body = {"name": _name(), "kb_ids": [self.kb()]}
        return str(self.owner("POST", "/v1/chatbots", json=body)["id"])

    def conversation(self, chatbot: str) -> str:
        body = self.owner("POST", f"/v1/chatbots/{chatbot}/conversations", json={})
        return str(body["id"])


def _name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def definition(template_id: str) -> dict[str, Any]:
    data = CATALOG.entries["mutual-nda"].template.model_dump(mode="json", by_alias=True)
    data.pop("version")
    data["id"] = template_id
    return data


def example(template_id: str) -> dict[str, Any]:
    return dict(CATALOG.entries[template_id].template.example)


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Say hi"}]}


def build(w: World, method: str, path: str, role: str) -> Call:
    """A valid request for ``(method, path)`` made by ``role``."""
    route: dict[tuple[str, str], Callable[[], Call]] = {
        ("POST", "/v1/chat/completions"): lambda: Call(method, path, json=CHAT),
        ("POST", "/v1/embeddings"): lambda: Call(
            method, path, json={"model": "auto", "input": "hi"}
        ),
        ("GET", "/v1/templates/{template_id}"): lambda: Call(method, f"/v1/templates/{BUILTIN}"),
        ("POST", "/v1/templates/{template_id}/render"): lambda: Call(
            method, f"/v1/templates/{BUILTIN}/render", json={"inputs": example(BUILTIN)}
        ),
        ("POST", "/v1/templates/{template_id}/generate"): lambda: Call(
            method, f"/v1/templates/{BUILTIN}/generate", json={"inputs": example(BUILTIN)}
        ),
        ("POST", "/v1/templates/custom"): lambda: Call(
            method, path, json={"template": definition(f"m-{uuid.uuid4().hex[:8]}")}
        ),
        ("PUT", "/v1/templates/custom/{template_id}"): lambda: (
            lambda tid: Call(
                method, f"/v1/templates/custom/{tid}", json={"template": definition(tid)}
            )
        )(w.custom_template()),
        ("GET", "/v1/templates/custom/{template_id}"): lambda: Call(
            method, f"/v1/templates/custom/{w.custom_template()}"
        ),
        ("DELETE", "/v1/templates/custom/{template_id}"): lambda: Call(
            method, f"/v1/templates/custom/{w.custom_template()}"
        ),
        ("GET", "/v1/templates/custom/{template_id}/versions"): lambda: Call(
            method, f"/v1/templates/custom/{w.custom_template()}/versions"
        ),
        ("PUT", "/v1/templates/{template_id}/hidden"): lambda: Call(
            method, f"/v1/templates/{BUILTIN}/hidden"
        ),
        ("DELETE", "/v1/templates/{template_id}/hidden"): lambda: Call(
            method, f"/v1/templates/{BUILTIN}/hidden"
        ),
        ("POST", "/v1/members"): lambda: Call(
            method, path, json={"email": f"i-{uuid.uuid4().hex[:8]}@x.test", "role": "viewer"}
        ),
        ("PATCH", "/v1/members/{user_id}"): lambda: Call(
            method, f"/v1/members/{w.fresh_member()}", json={"role": "member"}
        ),
        ("DELETE", "/v1/members/{user_id}"): lambda: Call(
            method, f"/v1/members/{w.fresh_member()}"
        ),
        ("POST", "/v1/keys"): lambda: Call(method, path, json={"name": "k"}),
        ("DELETE", "/v1/keys/{key_id}"): lambda: Call(method, f"/v1/keys/{w.key_of(role)}"),
        ("POST", "/v1/service-accounts"): lambda: Call(
            method, path, json={"name": "sa", "role": "viewer"}
        ),
        ("DELETE", "/v1/service-accounts/{account_id}"): lambda: Call(
            method, f"/v1/service-accounts/{w.account()}"
        ),
        ("PUT", "/v1/budgets"): lambda: Call(method, path, json={"monthly_limit_usd": "100"}),
        ("DELETE", "/v1/budgets"): lambda: (
            w.owner("PUT", "/v1/budgets", json={"monthly_limit_usd": "100"}) and Call(method, path)
        ),
        ("GET", "/v1/keys/{key_id}/budget"): lambda: Call(
            method, f"/v1/keys/{w.key_of('owner')}/budget"
        ),
        ("PUT", "/v1/keys/{key_id}/budget"): lambda: Call(
            method, f"/v1/keys/{w.key_of('owner')}/budget", json={"monthly_limit_usd": "5"}
        ),
        ("DELETE", "/v1/keys/{key_id}/budget"): lambda: Call(
            method, f"/v1/keys/{w.key_with_budget()}/budget"
        ),
        ("PUT", "/v1/limits"): lambda: Call(method, path, json={"requests_per_minute": 1000}),
        ("GET", "/v1/keys/{key_id}/limits"): lambda: Call(
            method, f"/v1/keys/{w.key_of('owner')}/limits"
        ),
        ("PUT", "/v1/keys/{key_id}/limits"): lambda: Call(
            method, f"/v1/keys/{w.key_of('owner')}/limits", json={"requests_per_minute": 500}
        ),
        ("POST", "/v1/knowledge-bases"): lambda: Call(method, path, json={"name": _name()}),
        ("GET", "/v1/knowledge-bases/{kb_id}"): lambda: Call(
            method, f"/v1/knowledge-bases/{w.kb()}"
        ),
        ("PATCH", "/v1/knowledge-bases/{kb_id}"): lambda: Call(
            method, f"/v1/knowledge-bases/{w.kb()}", json={"description": "d"}
        ),
        ("DELETE", "/v1/knowledge-bases/{kb_id}"): lambda: Call(
            method, f"/v1/knowledge-bases/{w.fresh_kb()}"
        ),
        ("GET", "/v1/knowledge-bases/{kb_id}/documents"): lambda: Call(
            method, f"/v1/knowledge-bases/{w.kb()}/documents"
        ),
        ("POST", "/v1/knowledge-bases/{kb_id}/documents"): lambda: Call(
            method,
            f"/v1/knowledge-bases/{w.kb()}/documents",
            files={"file": ("a.txt", io.BytesIO(b"Tenants stay apart."), "text/plain")},
        ),
        ("GET", "/v1/knowledge-bases/{kb_id}/documents/{doc_id}"): lambda: Call(
            method, f"/v1/knowledge-bases/{w.kb()}/documents/{w.document(w.kb())}"
        ),
        ("DELETE", "/v1/knowledge-bases/{kb_id}/documents/{doc_id}"): lambda: Call(
            method, f"/v1/knowledge-bases/{w.kb()}/documents/{w.document(w.kb())}"
        ),
        ("POST", "/v1/knowledge-bases/{kb_id}/search"): lambda: Call(
            method, f"/v1/knowledge-bases/{w.kb()}/search", json={"query": "tenants"}
        ),
        ("POST", "/v1/chatbots"): lambda: Call(
            method, path, json={"name": _name(), "kb_ids": [w.kb()]}
        ),
        ("GET", "/v1/chatbots/{chatbot_id}"): lambda: Call(method, f"/v1/chatbots/{w.chatbot()}"),
        ("PATCH", "/v1/chatbots/{chatbot_id}"): lambda: Call(
            method, f"/v1/chatbots/{w.chatbot()}", json={"name": _name()}
        ),
        ("DELETE", "/v1/chatbots/{chatbot_id}"): lambda: Call(
            method, f"/v1/chatbots/{w.fresh_chatbot()}"
        ),
        ("POST", "/v1/chatbots/{chatbot_id}/chat/completions"): lambda: Call(
            method, f"/v1/chatbots/{w.chatbot()}/chat/completions", json=CHAT
        ),
        ("GET", "/v1/chatbots/{chatbot_id}/conversations"): lambda: Call(
            method, f"/v1/chatbots/{w.chatbot()}/conversations"
        ),
        ("POST", "/v1/chatbots/{chatbot_id}/conversations"): lambda: Call(
            method, f"/v1/chatbots/{w.chatbot()}/conversations", json={}
        ),
        ("GET", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}"): lambda: Call(
            method,
            f"/v1/chatbots/{w.chatbot()}/conversations/{w.conversation(w.chatbot())}",
        ),
        ("DELETE", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}"): lambda: Call(
            method,
            f"/v1/chatbots/{w.chatbot()}/conversations/{w.conversation(w.chatbot())}",
        ),
        ("POST", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}/messages"): lambda: (
            Call(
                method,
                f"/v1/chatbots/{w.chatbot()}/conversations/{w.conversation(w.chatbot())}/messages",
                json={"content": "hello"},
            )
        ),
    }
    make = route.get((method, path))
    if make is not None:
        return make()
    assert "{" not in path, f"no request recipe for {method} {path}: add one to build()"
    return Call(method, path)


def test_every_route_is_classified(ident: IdEnv) -> None:
    routes = app_routes(ident.server.app)
    unclassified = sorted(routes - ROUTES.keys())
    gone = sorted(ROUTES.keys() - routes)
    assert not unclassified, (
        f"classify these routes in ROUTES (permission or PUBLIC): {unclassified}"
    )
    assert not gone, f"these ROUTES entries name no route any more: {gone}"


def _send(ident: IdEnv, token: str | None, call: Call) -> httpx.Response:
    with ident.client(token) as c:
        return c.request(
            call.method, call.path, json=call.json, params=call.params, files=call.files
        )


@pytest.mark.timeout(900)  # ~400 real requests; minutes on a loaded 2-core machine
def test_role_by_endpoint_matrix(ident: IdEnv) -> None:
    tenant = ident.tenant(ROLES)
    tokens = {role: ident.token(m.email) for role, m in tenant.members.items()}
    world = World(ident, tenant, tokens)
    failures: list[str] = []
    for (method, path), needs in sorted(ROUTES.items(), key=lambda kv: kv[0][1]):
        if needs == PUBLIC:
            continue
        for role in ROLES:
            allowed = needs == ANY or needs in PERMISSIONS[Role(role)]
            call = build(world, method, path, role)
            response = _send(ident, tokens[role], call)
            status = response.status_code
            if not allowed:
                ok = status == 403
            elif (method, path) in REACHED_ONLY:
                ok = status not in (401, 403)
            else:
                ok = 200 <= status < 300
            if not ok:
                want = "2xx" if allowed else "403"
                failures.append(
                    f"{role:9} {method} {path}: {status}, want {want}: {response.text[:160]}"
                )
        if needs != ANY:  # and nobody gets in without credentials
            anonymous = _send(ident, None, build(world, method, path, "owner"))
            if anonymous.status_code != 401:
                failures.append(f"anonymous {method} {path}: {anonymous.status_code}, want 401")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("scope", ["models:use", "chat"])
def test_a_scoped_key_is_held_to_its_scope(ident: IdEnv, scope: str) -> None:
    """An owner's key scoped to model calls (new or legacy scope name) cannot manage."""
    t = ident.tenant(["owner"])
    state = ident.server.state
    issued = ident.server.call(
        admin.issue_key(
            state.sessions, tenant=t.name, email=t.members["owner"].email, actor="t", scopes=[scope]
        )
    )
    with ident.client(issued.secret) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert c.get("/v1/members").status_code == 403
        escalate = c.post("/v1/keys", json={"name": "wider", "scopes": ["*"]})
        assert escalate.status_code == 403  # keys:write is outside its scope anyway
