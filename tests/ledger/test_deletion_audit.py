"""Deleting a chatbot (over the API) or a knowledge base leaves an audit event in its
tenant's chain, and the chain still verifies."""

from __future__ import annotations

import uuid

from polymodal.db import repositories
from polymodal.db.models import AuditEvent
from polymodal.db.scope import tenant_session
from polymodal.domain.principal import Role
from polymodal.tenancy import audit
from tests.chatbots.conftest import ChatEnv, cenv  # noqa: F401  (the chatbot API fixture)
from tests.ledger.conftest import new_tenant
from tests.rag.conftest import Rag, rag  # noqa: F401  (the knowledge-base service fixture)


def _events(env: ChatEnv, tenant_id: uuid.UUID) -> list[AuditEvent]:
    async def read() -> list[AuditEvent]:
        async with tenant_session(env.server.state.sessions, tenant_id) as s:
            return await repositories.list_audit(s, tenant_id=tenant_id)

    return env.server.call(read())


def test_deleting_a_chatbot_is_audited(cenv: ChatEnv) -> None:  # noqa: F811
    bot = cenv.chatbot()
    with cenv.client() as c:
        assert c.delete(f"/chatbots/{bot['id']}").status_code == 204
    newest = _events(cenv, cenv.tenant_a)[0]
    assert (newest.action, newest.target) == ("chatbot.delete", bot["id"])
    assert newest.actor.startswith("user:")
    verdict = cenv.server.call(
        audit.verify_tenant(cenv.server.state.sessions, tenant_id=cenv.tenant_a)
    )
    assert verdict.ok, verdict.problem


async def test_deleting_a_knowledge_base_is_audited(rag: Rag) -> None:  # noqa: F811
    tenant = await new_tenant(rag.sessions)
    owner = tenant.principal(Role.OWNER)
    kb = await rag.service.create_kb(owner, name=f"kb-{uuid.uuid4().hex[:6]}")
    await rag.service.delete_kb(owner, kb.id)
    async with tenant_session(rag.sessions, tenant.id) as s:
        newest = (await repositories.list_audit(s, tenant_id=tenant.id))[0]
    assert (newest.action, newest.target) == ("kb.delete", str(kb.id))
    assert newest.data["name"] == kb.name
    verdict = await audit.verify_tenant(rag.sessions, tenant_id=tenant.id)
    assert verdict.ok, verdict.problem
