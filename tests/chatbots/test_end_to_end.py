"""A chatbot over a real knowledge base: documents uploaded through /v1/knowledge-bases,
ingested (parse, chunk, embed with the local multilingual-e5-small, Qdrant local mode),
searched by the product's hybrid retriever, answered through the gateway (fake OpenAI
upstream) and read back with the openai SDK: citations name the document, page and
chunk; an unrelated question gets the honest "not in the knowledge base"."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fpdf import FPDF
from openai import OpenAI

from polymodal.settings import Settings
from polymodal.testing import FakeProvider
from tests.live import LiveServer
from tests.setup_helpers import fake_chat_deployment, routed_to_fake, seed_tenants, sqlite_settings

FAKE_KEY = "sk-fake-upstream-key-e2e"


@dataclass
class E2E:
    server: LiveServer
    fake: FakeProvider
    key: str
    other_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        return self.server.client(key or self.key, path="/v1", timeout=120)

    def drain(self) -> None:
        self.server.drain_ingestion()


def _settings(tmp: Path, fake: FakeProvider) -> Settings:
    return sqlite_settings(
        tmp,
        "e2e.db",
        **routed_to_fake(
            fake_chat_deployment(fake, "fake-writer", capabilities=["chat"]),
            upstream_first_byte_timeout_s=5.0,
            upstream_total_timeout_s=20.0,
            ingest_queue="in-process",
        ),
    )


PEOPLE = {"e2e-a": [("dev@e2e-a.test", "developer")], "e2e-b": [("dev@e2e-b.test", "developer")]}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    tmp = tmp_path_factory.mktemp("chatbot-e2e")
    with FakeProvider(wire="openai", api_key=FAKE_KEY) as fake:
        settings = _settings(tmp, fake)
        keys = asyncio.run(seed_tenants(settings, PEOPLE)).keys
        with LiveServer(settings, {"FAKE_KEY": FAKE_KEY}) as server:
            yield E2E(server, fake, keys["dev@e2e-a.test"], keys["dev@e2e-b.test"])


def _handbook_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 10, text="Lost badges are replaced at the front desk on the ground floor.")
    pdf.add_page()
    pdf.multi_cell(0, 10, text="Staff parking is in the basement garage; the gate opens at 7 am.")
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def kb(e2e: E2E) -> dict[str, Any]:
    with e2e.client() as c:
        kb = c.post("/knowledge-bases", json={"name": "handbook"}).json()
        files = [
            ("file", ("handbook.pdf", _handbook_pdf(), "application/pdf")),
            (
                "file",
                (
                    "leave.md",
                    b"# Leave\n\nStaff get 25 days of paid leave a year.",
                    "text/markdown",
                ),
            ),
        ]
        r = c.post(f"/knowledge-bases/{kb['id']}/documents", files=files)
        assert r.status_code == 202, r.text
    e2e.drain()
    return dict(kb)


def test_chatbot_answers_from_ingested_documents_with_page_citations(
    e2e: E2E, kb: dict[str, Any]
) -> None:
    with e2e.client() as c:
        bot = c.post("/chatbots", json={"name": "handbook-bot", "kb_ids": [kb["id"]]}).json()
    client = OpenAI(base_url=f"{e2e.server.base_url}/v1/chatbots/{bot['id']}", api_key=e2e.key)
    e2e.fake.push_replies("The garage gate opens at 7 am [1].")
    done = client.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "When does the staff parking gate open?"}],
    )
    extra = done.model_extra or {}
    assert done.choices[0].message.content == "The garage gate opens at 7 am [1]."
    first = extra["citations"][0]
    assert first["cited"] and first["title"] == "handbook" and first["page"] == 2
    assert "7 am" in first["snippet"] and first["kb_id"] == kb["id"]
    assert extra["polymodal"]["retrieval"]["cache"] == "miss"
    prompt = e2e.fake.requests[-1]["body"]["messages"][0]["content"]
    assert "[1] handbook, page 2" in prompt and "basement garage" in prompt

    # The same question again: the semantic cache serves the retrieval.
    e2e.fake.push_replies("At 7 am [1].")
    stream = client.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "when does the staff parking gate open"}],
        stream=True,
    )
    chunks = list(stream)
    last = chunks[-1].model_extra or {}
    assert last["polymodal"]["retrieval"]["cache"] == "hit"
    assert last["citations"][0]["page"] == 2


def test_unrelated_question_is_not_in_the_knowledge_base(e2e: E2E, kb: dict[str, Any]) -> None:
    with e2e.client() as c:
        bot = c.post("/chatbots", json={"name": "strict-bot", "kb_ids": [kb["id"]]}).json()
        e2e.fake.clear_requests()
        r = c.post(
            f"/chatbots/{bot['id']}/chat/completions",
            json={
                "model": "x",
                "messages": [{"role": "user", "content": "What is the boiling point of tungsten?"}],
            },
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["polymodal"]["not_in_knowledge_base"] is True
    assert body["choices"][0]["message"]["content"].startswith("I could not find this")
    assert body["citations"] == []
    assert not [q for q in e2e.fake.requests if q["path"].endswith("/chat/completions")]


def test_another_tenant_cannot_use_the_knowledge_base(e2e: E2E, kb: dict[str, Any]) -> None:
    with e2e.client(e2e.other_key) as c:
        r = c.post("/chatbots", json={"name": "thief", "kb_ids": [kb["id"]]})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "knowledge_base_not_found"
    assert kb["id"] in r.json()["error"]["message"]
