"""A live polymodal server (real HTTP on loopback) on each database backend, with one
fake OpenAI upstream behind every tier, and helpers that make tenants whose members
hold each role, with passwords and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from polymodal.domain.principal import Role
from polymodal.tenancy import admin
from polymodal.testing import FakeProvider
from tests.conftest import DatabaseTarget
from tests.live import LiveServer
from tests.setup_helpers import (
    add_member,
    fake_chat_deployment,
    fake_embed_deployment,
    routed_to_fake,
)

FAKE_KEY = "sk-fake-upstream-key-identity"
PASSWORD = "correct horse battery staple"
ROLES = [r.value for r in Role]


@dataclass
class Member:
    email: str
    role: str
    user_id: str
    key: str


@dataclass
class Tenant:
    name: str
    id: str
    members: dict[str, Member] = field(default_factory=dict)  # by role


@dataclass
class IdEnv:
    server: LiveServer
    fake: FakeProvider
    backend: str

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        return self.server.client(token, headers=headers)

    def tenant(self, roles: list[str] | None = None, *, passwords: bool = True) -> Tenant:
        """A new tenant with one member per role (owner first), each with an API key."""
        state = self.server.state
        name = f"t-{uuid.uuid4().hex[:10]}"
        created = self.server.call(admin.create_tenant(state.sessions, name=name, actor="test"))
        tenant = Tenant(name=name, id=str(created.id))
        for role in roles or ROLES:
            email = f"{role}-{uuid.uuid4().hex[:6]}@{name}.test"
            user_id, issued = self.server.call(
                add_member(state.sessions, tenant=name, email=email, role=role)
            )
            if passwords:
                self.set_password(email)
            tenant.members[role] = Member(email, role, str(user_id), issued.secret)
        return tenant

    def set_password(self, email: str, password: str = PASSWORD) -> None:
        grants = self.server.state.identity.grants
        self.server.call(grants.set_password(email=email, password=password))

    def login(
        self,
        email: str,
        password: str = PASSWORD,
        *,
        tenant: str | None = None,
        scope: str | None = None,
        expect: int | None = 200,
    ) -> httpx.Response:
        form = {"grant_type": "password", "username": email, "password": password}
        if tenant:
            form["tenant"] = tenant
        if scope:
            form["scope"] = scope
        with self.client() as c:
            response = c.post("/v1/auth/token", data=form)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response

    def token(self, email: str, **kwargs: Any) -> str:
        return str(self.login(email, **kwargs).json()["access_token"])


def _settings(db: DatabaseTarget, fake: FakeProvider) -> Any:
    return db.settings(
        **routed_to_fake(
            fake_chat_deployment(fake, "fake-chat", max_output_tokens=1000),
            fake_embed_deployment(fake, "fake-embed"),
            default_embedding_model="fake-embed",
            upstream_first_byte_timeout_s=5.0,
            login_max_failures=3,
            login_failure_window_s=600,
            # Tests in a module share one server: one test's made-up kid must not keep the
            # next from finding another replica's new key within the throttle.
            jwt_unknown_kid_reload_s=0.0,
        )
    )


@pytest.fixture(scope="module")
def ident(migrated_db: DatabaseTarget) -> Iterator[IdEnv]:
    with (
        FakeProvider(wire="openai", api_key=FAKE_KEY) as fake,
        LiveServer(_settings(migrated_db, fake), {"FAKE_KEY": FAKE_KEY}) as server,
    ):
        yield IdEnv(server=server, fake=fake, backend=migrated_db.backend)
