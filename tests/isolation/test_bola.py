"""Broken object-level authorization: tenant B's credentials get 404, never 403 or 200,
on every method of every object endpoint called with tenant A's ids.

Table-driven: every path of the app's OpenAPI document with a path parameter must have
a case in CASES for each of its methods (``test_every_object_route_has_a_case`` fails
otherwise), and every path parameter a factory in FACTORIES that creates a real object
in tenant A through the API. A new object endpoint therefore cannot ship without its
BOLA check.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from polymodal.tenancy import admin
from tests.isolation.conftest import IsoEnv, template_definition

Ids = dict[str, str]
Body = dict[str, Any] | Callable[[Ids], dict[str, Any]] | None
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Case:
    """One method of one object route: the JSON body and query B sends (valid, so the
    request reaches the handler and is refused for the object, not for its shape)."""

    body: Body = None
    query: dict[str, str] = field(default_factory=dict)


# --- factories: one real tenant-A object per path parameter ------------------------------


def _post(env: IsoEnv, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    with env.client(env.a.owner_key) as c:
        r = c.post(path, json=body)
    assert r.status_code == status, f"POST {path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def _custom_template(env: IsoEnv, ids: Ids) -> str:
    tid = f"bola-{uuid.uuid4().hex[:8]}"
    _post(env, "/v1/templates/custom", {"template": template_definition(tid)})
    return tid


def _key(env: IsoEnv, ids: Ids) -> str:
    key_id = str(_post(env, "/v1/keys", {"name": "bola"})["id"])
    with env.client(env.a.owner_key) as c:  # so its budget and limits exist to be read
        assert c.put(f"/v1/keys/{key_id}/budget", json=KEY_BUDGET).status_code == 200
        assert c.put(f"/v1/keys/{key_id}/limits", json=KEY_LIMITS).status_code == 200
    return key_id


def _service_account(env: IsoEnv, ids: Ids) -> str:
    body = {"name": "bola", "role": "developer"}
    return str(_post(env, "/v1/service-accounts", body)["id"])


def _member(env: IsoEnv, ids: Ids) -> str:
    """A developer of tenant A (added by the operator: invitations are the identity
    suite's subject)."""

    async def add() -> str:
        async with env.sessions() as sessions:
            user_id = await admin.add_user(
                sessions, tenant=env.a.name, email=MEMBER_EMAIL, role="developer", actor="test"
            )
        return str(user_id)

    return asyncio.run(add())


def _knowledge_base(env: IsoEnv, ids: Ids) -> str:
    return str(_post(env, "/v1/knowledge-bases", {"name": "bola"})["id"])


def _document(env: IsoEnv, ids: Ids) -> str:
    text = b"Tenant A's handbook: the office opens at nine."
    with env.client(env.a.owner_key) as c:
        r = c.post(
            f"/v1/knowledge-bases/{ids['kb_id']}/documents",
            files={"file": ("handbook.txt", text, "text/plain")},
        )
    assert r.status_code == 202, r.text
    return str(r.json()["data"][0]["id"])


def _chatbot(env: IsoEnv, ids: Ids) -> str:
    if "kb_id" not in ids:
        ids["kb_id"] = _knowledge_base(env, ids)
    return str(_post(env, "/v1/chatbots", {"name": "bola", "kb_ids": [ids["kb_id"]]})["id"])


def _conversation(env: IsoEnv, ids: Ids) -> str:
    return str(_post(env, f"/v1/chatbots/{ids['chatbot_id']}/conversations", {"title": "a"})["id"])


MEMBER_EMAIL = f"bola-{uuid.uuid4().hex[:6]}@a.test"
KEY_BUDGET = {"monthly_limit_usd": 10}
KEY_LIMITS = {"requests_per_minute": 10}

# In creation order (a factory may read the ids made before it).
FACTORIES: dict[str, Callable[[IsoEnv, Ids], str]] = {
    "template_id": _custom_template,
    "key_id": _key,
    "account_id": _service_account,
    "user_id": _member,
    "kb_id": _knowledge_base,
    "doc_id": _document,
    "chatbot_id": _chatbot,
    "conversation_id": _conversation,
}

# --- the cases ----------------------------------------------------------------------------

TEMPLATE_INPUTS = {"inputs": {}, "lang": "en"}
CHAT = {"messages": [{"role": "user", "content": "hello"}]}

CASES: dict[tuple[str, str], Case] = {
    # templates
    ("GET", "/v1/templates/{template_id}"): Case(),
    ("POST", "/v1/templates/{template_id}/render"): Case(TEMPLATE_INPUTS),
    ("POST", "/v1/templates/{template_id}/generate"): Case(TEMPLATE_INPUTS),
    ("PUT", "/v1/templates/{template_id}/hidden"): Case(),
    ("DELETE", "/v1/templates/{template_id}/hidden"): Case(),
    ("GET", "/v1/templates/custom/{template_id}"): Case(),
    ("GET", "/v1/templates/custom/{template_id}/versions"): Case(),
    ("PUT", "/v1/templates/custom/{template_id}"): Case(
        lambda ids: {"template": template_definition(ids["template_id"])}
    ),
    ("DELETE", "/v1/templates/custom/{template_id}"): Case(),
    # keys, their budgets and limits, service accounts, members
    ("DELETE", "/v1/keys/{key_id}"): Case(),
    ("GET", "/v1/keys/{key_id}/budget"): Case(),
    ("PUT", "/v1/keys/{key_id}/budget"): Case({"monthly_limit_usd": 99999}),
    ("DELETE", "/v1/keys/{key_id}/budget"): Case(),
    ("GET", "/v1/keys/{key_id}/limits"): Case(),
    ("PUT", "/v1/keys/{key_id}/limits"): Case({"requests_per_minute": 99999}),
    ("DELETE", "/v1/service-accounts/{account_id}"): Case(),
    ("PATCH", "/v1/members/{user_id}"): Case({"role": "owner"}),
    ("DELETE", "/v1/members/{user_id}"): Case(),
    # knowledge bases and their documents
    ("GET", "/v1/knowledge-bases/{kb_id}"): Case(),
    ("PATCH", "/v1/knowledge-bases/{kb_id}"): Case({"name": "taken"}),
    ("DELETE", "/v1/knowledge-bases/{kb_id}"): Case(),
    ("GET", "/v1/knowledge-bases/{kb_id}/documents"): Case(),
    ("POST", "/v1/knowledge-bases/{kb_id}/documents"): Case({"url": "https://example.com/"}),
    ("POST", "/v1/knowledge-bases/{kb_id}/search"): Case({"query": "hello"}),
    ("GET", "/v1/knowledge-bases/{kb_id}/documents/{doc_id}"): Case(),
    ("DELETE", "/v1/knowledge-bases/{kb_id}/documents/{doc_id}"): Case(),
    # chatbots and their conversations
    ("GET", "/v1/chatbots/{chatbot_id}"): Case(),
    ("PATCH", "/v1/chatbots/{chatbot_id}"): Case({"name": "taken"}),
    ("DELETE", "/v1/chatbots/{chatbot_id}"): Case(),
    ("POST", "/v1/chatbots/{chatbot_id}/chat/completions"): Case(CHAT),
    ("GET", "/v1/chatbots/{chatbot_id}/conversations"): Case(),
    ("POST", "/v1/chatbots/{chatbot_id}/conversations"): Case({"title": "taken"}),
    ("GET", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}"): Case(),
    ("DELETE", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}"): Case(),
    ("POST", "/v1/chatbots/{chatbot_id}/conversations/{conversation_id}/messages"): Case(
        {"content": "hello"}
    ),
}

# Where tenant A finds each object afterwards, when no GET route of its own shows it:
# (listing path, the id's field) -> it must still be listed, unchanged.
LISTINGS = {
    "key_id": "/v1/keys",
    "account_id": "/v1/service-accounts",
    "user_id": "/v1/members",
}


def object_routes(env: IsoEnv) -> set[tuple[str, str]]:
    spec = env.server.app.openapi()
    return {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        if "{" in path
        for method in ops
        if method in METHODS
    }


def params_of(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def make_objects(env: IsoEnv) -> Ids:
    """One object of tenant A per path parameter (created in dependency order)."""
    ids: Ids = {}
    for name, make in FACTORIES.items():
        if name not in ids:
            ids[name] = make(env, ids)
    return ids


@pytest.fixture(scope="module")
def a_ids(iso: IsoEnv) -> Ids:
    return make_objects(iso)


def _send(client: httpx.Client, method: str, path: str, case: Case, ids: Ids) -> httpx.Response:
    url = path.format(**{p: ids[p] for p in params_of(path)})
    body = case.body(ids) if callable(case.body) else case.body
    return client.request(method, url, json=body, params=case.query)


def test_every_object_route_has_a_case(iso: IsoEnv) -> None:
    routes = object_routes(iso)
    missing = sorted(routes - CASES.keys())
    stale = sorted(CASES.keys() - routes)
    assert not missing, f"object routes without a BOLA case in {__name__}.CASES: {missing}"
    assert not stale, f"BOLA cases for routes that no longer exist: {stale}"
    no_factory = sorted({p for _, path in routes for p in params_of(path)} - FACTORIES.keys())
    assert not no_factory, f"path parameters without a factory in FACTORIES: {no_factory}"


def test_other_tenant_gets_404_then_the_owner_still_gets_200(iso: IsoEnv, a_ids: Ids) -> None:
    """All cases in one test, so the owner's check runs after every request of B (test
    order may be shuffled)."""
    wrong = []
    with iso.client(iso.b.owner_key) as b:
        for (method, path), case in sorted(CASES.items()):
            r = _send(b, method, path, case, a_ids)
            if r.status_code != 404 or "error" not in r.json():
                wrong.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
    assert not wrong, "tenant B reached tenant A's objects:\n" + "\n".join(wrong)
    # Nothing B sent changed A's objects, and A's own reads succeed, so the 404s were
    # about the tenant, not a wrong path or body.
    with iso.client(iso.a.owner_key) as a:
        for (method, path), case in sorted(CASES.items()):
            if method == "GET":
                r = _send(a, method, path, case, a_ids)
                assert r.status_code == 200, f"{method} {path} as A: {r.status_code} {r.text}"
        r = a.get(f"/v1/templates/custom/{a_ids['template_id']}")
        assert r.json()["version"] == 1  # B's PUT added no version
        for setting in ("budget", "limits"):  # B's PUTs (99999) did not land
            r = a.get(f"/v1/keys/{a_ids['key_id']}/{setting}")
            assert r.status_code == 200 and "99999" not in r.text, r.text
        for param, listing in LISTINGS.items():
            r = a.get(listing)
            assert r.status_code == 200, r.text
            rows = r.json().get("data") or r.json().get("members") or []
            row = next((x for x in rows if a_ids[param] in (x.get("id"), x.get("user_id"))), None)
            assert row is not None, f"{param} {a_ids[param]} no longer in {listing}"
            assert row.get("revoked_at") is None and row.get("role") in (None, "developer"), row


def test_collections_never_list_another_tenants_objects(iso: IsoEnv, a_ids: Ids) -> None:
    """Every parameterless GET of /v1 as tenant B: none of A's ids appear in the answer."""
    spec = iso.server.app.openapi()
    paths = [p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p]
    paths = [p for p in paths if p.startswith("/v1/")]
    assert paths
    with iso.client(iso.b.owner_key) as b:
        for path in paths:
            r = b.get(path)
            assert r.status_code < 500, f"GET {path}: {r.status_code}"
            text = (
                r.text if "json" not in r.headers.get("content-type", "") else json.dumps(r.json())
            )
            leaked = [v for v in a_ids.values() if v in text]
            assert not leaked, f"GET {path} as tenant B lists A's {leaked}"


def test_bodies_naming_another_tenants_objects_are_refused(iso: IsoEnv, a_ids: Ids) -> None:
    """A's id in the body of B's request to B's own object: refused exactly as an id that
    exists nowhere (same status, same error code), so B learns nothing."""
    ghost = str(uuid.uuid4())
    with iso.client(iso.b.owner_key) as b:
        kb = b.post("/v1/knowledge-bases", json={"name": "b's"})
        assert kb.status_code == 201, kb.text
        bot = b.post("/v1/chatbots", json={"name": "b's", "kb_ids": [kb.json()["id"]]})
        assert bot.status_code == 201, bot.text
        bot_id = bot.json()["id"]
        attempts: dict[str, Callable[[str, str], httpx.Response]] = {
            "POST /v1/chatbots with A's knowledge base": lambda kb_id, _: b.post(
                "/v1/chatbots", json={"name": "x", "kb_ids": [kb_id]}
            ),
            "PATCH B's chatbot onto A's knowledge base": lambda kb_id, _: b.patch(
                f"/v1/chatbots/{bot_id}", json={"kb_ids": [kb_id]}
            ),
            "B's chatbot continuing A's conversation": lambda _, conv: b.post(
                f"/v1/chatbots/{bot_id}/chat/completions",
                json={**CHAT, "conversation_id": conv},
            ),
        }
        wrong = []
        for what, send in attempts.items():
            theirs = send(a_ids["kb_id"], a_ids["conversation_id"])
            nowhere = send(ghost, ghost)
            seen = (theirs.status_code, theirs.json()["error"]["code"])
            if not 400 <= theirs.status_code < 500 or seen != (
                nowhere.status_code,
                nowhere.json()["error"]["code"],
            ):
                wrong.append(f"{what}: {theirs.status_code} {theirs.text[:200]}")
        assert not wrong, "\n".join(wrong)
        # B's chatbot still reads only B's knowledge base.
        assert b.get(f"/v1/chatbots/{bot_id}").json()["kb_ids"] == [kb.json()["id"]]
