"""Chatbots over real HTTP: configuration, conversations, grounded answers with [n]
citations, the honest "not in the knowledge base", summaries, streaming, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from tests.chatbots.conftest import ChatEnv

TOWER = "The Eiffel Tower in Paris is 330 metres tall and was finished in 1889."
HOURS = "The Louvre museum opens at 9 am and closes at 6 pm every day except Tuesday."
SECRET_B = "Tenant B keeps its launch code 7781 in the vault behind the Eiffel poster."


@pytest.fixture(scope="module")
def docs(cenv: ChatEnv) -> None:
    r = cenv.retriever
    if (cenv.tenant_a, cenv.kb_a) not in r.chunks:
        r.add(cenv.tenant_a, cenv.kb_a, title="Paris guide", text=TOWER, page=3)
        r.add(cenv.tenant_a, cenv.kb_a, title="Museum FAQ", text=HOURS, page=1)
        r.add(cenv.tenant_b, cenv.kb_b, title="Vault", text=SECRET_B, page=None)


def _chat_requests(cenv: ChatEnv) -> list[dict[str, Any]]:
    return [r for r in cenv.fake.requests if r["path"].endswith("/chat/completions")]


def _sse(text: str) -> list[Any]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append("[DONE]" if data == "[DONE]" else orjson.loads(data))
    return events


# --- configuration ------------------------------------------------------------------------


def test_chatbot_crud(cenv: ChatEnv) -> None:
    bot = cenv.chatbot(system_prompt="You are Pierre, a friendly Paris guide.", language="fr")
    assert bot["language"] == "fr" and bot["tier"] == "simple" and bot["top_k"] == 5
    assert bot["citation_style"] == "numeric" and bot["kb_ids"] == [str(cenv.kb_a)]
    with cenv.client() as c:
        assert c.get(f"/chatbots/{bot['id']}").json()["name"] == bot["name"]
        assert bot["id"] in [b["id"] for b in c.get("/chatbots").json()["data"]]
        r = c.patch(f"/chatbots/{bot['id']}", json={"tier": "complex", "top_k": 3})
        assert r.status_code == 200, r.text
        assert (r.json()["tier"], r.json()["top_k"], r.json()["language"]) == ("complex", 3, "fr")
        assert c.delete(f"/chatbots/{bot['id']}").status_code == 204
        gone = c.get(f"/chatbots/{bot['id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "chatbot_not_found"
    assert bot["id"] in gone.json()["error"]["message"]


def test_another_tenants_kb_is_named_as_missing(cenv: ChatEnv) -> None:
    with cenv.client() as c:
        r = c.post("/chatbots", json={"name": "sneaky", "kb_ids": [str(cenv.kb_b)]})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "knowledge_base_not_found" and error["param"] == "kb_ids"
    assert str(cenv.kb_b) in error["message"]
    with cenv.client() as c:
        assert c.get("/chatbots").json()["data"] == [] or all(
            b["name"] != "sneaky" for b in c.get("/chatbots").json()["data"]
        )


def test_bad_configuration_is_named(cenv: ChatEnv) -> None:
    cases = [
        ({"language": "xx"}, "language"),
        ({"tier": "turbo"}, "tier"),
        ({"citation_style": "mla"}, "citation_style"),
        ({"temperature": 3}, "temperature"),
        ({"kb_ids": []}, "kb_ids"),
    ]
    with cenv.client() as c:
        for extra, field in cases:
            body = {"name": "bad", "kb_ids": [str(cenv.kb_a)], **extra}
            r = c.post("/chatbots", json=body)
            assert r.status_code == 422, (extra, r.text)
            assert r.json()["error"]["message"].startswith(field), r.text
        first = cenv.chatbot()
        dup = c.post("/chatbots", json={"name": first["name"], "kb_ids": [str(cenv.kb_a)]})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "chatbot_name_taken"


def test_viewer_reads_but_cannot_configure_or_chat(cenv: ChatEnv) -> None:
    bot = cenv.chatbot()
    with cenv.client(cenv.viewer_a) as c:
        assert c.get(f"/chatbots/{bot['id']}").status_code == 200
        denied = c.post("/chatbots", json={"name": "v", "kb_ids": [str(cenv.kb_a)]})
        chat = c.post(
            f"/chatbots/{bot['id']}/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "Eiffel tower?"}]},
        )
    assert denied.status_code == 403 and "chatbots:write" in denied.json()["error"]["message"]
    assert chat.status_code == 403 and "chatbots:chat" in chat.json()["error"]["message"]


def test_other_tenant_sees_no_chatbot(cenv: ChatEnv) -> None:
    bot = cenv.chatbot()
    with cenv.client(cenv.dev_b) as c:
        r = c.get(f"/chatbots/{bot['id']}")
        chat = c.post(f"/chatbots/{bot['id']}/conversations")
    assert r.status_code == 404 and chat.status_code == 404


# --- answering ----------------------------------------------------------------------------


def test_conversation_answer_cites_sources(cenv: ChatEnv, docs: None) -> None:
    bot = cenv.chatbot(system_prompt="You are a concise Paris guide.")
    cenv.fake.push_replies("The tower is 330 metres tall [1] and was finished in 1889 [1].")
    with cenv.client() as c:
        conv = c.post(f"/chatbots/{bot['id']}/conversations", json={"title": "Trip"}).json()
        r = c.post(
            f"/chatbots/{bot['id']}/conversations/{conv['id']}/messages",
            json={"content": "How tall is the Eiffel Tower in Paris?"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        stored = c.get(f"/chatbots/{bot['id']}/conversations/{conv['id']}").json()
    assert "[1]" in body["message"]["content"]
    # Rate-limit state on a success too, as on /v1/chat/completions.
    assert int(r.headers["x-ratelimit-limit-requests"]) > 0
    assert "x-ratelimit-remaining-tokens" in r.headers
    first = body["citations"][0]
    assert first["n"] == 1 and first["cited"] is True
    assert (first["title"], first["page"], first["chunk"]) == ("Paris guide", 3, 0)
    assert all(not c["cited"] for c in body["citations"][1:])
    assert body["polymodal"]["not_in_knowledge_base"] is False
    # The model saw the numbered sources, the persona and the question.
    prompt = _chat_requests(cenv)[-1]["body"]["messages"]
    assert prompt[0]["role"] == "system"
    assert "You are a concise Paris guide." in prompt[0]["content"]
    assert "[1] Paris guide, page 3" in prompt[0]["content"] and TOWER in prompt[0]["content"]
    assert prompt[-1] == {"role": "user", "content": "How tall is the Eiffel Tower in Paris?"}
    # Both messages are stored, the answer with its citations.
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["citations"][0]["title"] == "Paris guide"
    assert stored["title"] == "Trip"
    # Usage rows carry the chatbot's feature: the answer and the cache's query embedding.
    kinds = {(u.kind, u.deployment) for u in cenv.usage_rows(f"chatbot:{bot['id']}")}
    assert ("chat", "fake-writer") in kinds and ("embeddings", "local-e5-small") in kinds


def test_not_in_knowledge_base_is_honest_and_free(cenv: ChatEnv, docs: None) -> None:
    bot = cenv.chatbot()
    with cenv.client() as c:
        conv = c.post(f"/chatbots/{bot['id']}/conversations").json()
        r = c.post(
            f"/chatbots/{bot['id']}/conversations/{conv['id']}/messages",
            json={"content": "Wie hoch ist die Zugspitze in Bayern?"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["polymodal"]["not_in_knowledge_base"] is True
    assert body["polymodal"]["language"] == "de"
    assert "Wissensdatenbank" in body["message"]["content"]
    assert body["citations"] == []
    assert _chat_requests(cenv) == []  # no model call
    assert r.headers["content-language"] == "de"


def test_tenant_b_never_retrieves_tenant_a(cenv: ChatEnv, docs: None) -> None:
    with cenv.client(cenv.dev_b) as c:
        r = c.post(
            "/chatbots",
            json={"name": "b-bot", "kb_ids": [str(cenv.kb_b)], "relevance_threshold": 0.2},
        )
        bot = r.json()
        cenv.fake.push_replies("It is in the vault [1].")
        answer = c.post(
            f"/chatbots/{bot['id']}/chat/completions",
            json={
                "model": "x",
                "messages": [{"role": "user", "content": "How tall is the Eiffel Tower in Paris?"}],
            },
        ).json()
    titles = {c["title"] for c in answer["citations"]}
    assert titles <= {"Vault"}
    assert TOWER not in _chat_requests(cenv)[-1]["body"]["messages"][0]["content"]


def test_streamed_message_ends_with_citations_and_is_stored(cenv: ChatEnv, docs: None) -> None:
    bot = cenv.chatbot(citation_style="footnotes")
    cenv.fake.push_replies("The Louvre opens at 9 am [1].")
    with cenv.client() as c:
        conv = c.post(f"/chatbots/{bot['id']}/conversations").json()
        r = c.post(
            f"/chatbots/{bot['id']}/conversations/{conv['id']}/messages",
            json={"content": "When does the Louvre museum open?", "stream": True},
        )
        stored = c.get(f"/chatbots/{bot['id']}/conversations/{conv['id']}").json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert int(r.headers["x-ratelimit-limit-requests"]) > 0
    events = _sse(r.text)
    assert events[-1] == "[DONE]"
    last = events[-2]
    assert last["choices"] == [] and last["citations"][0]["title"] == "Museum FAQ"
    assert last["conversation_id"] == conv["id"] and isinstance(last["message_id"], int)
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-2] if e["choices"]
    )
    assert text.startswith("The Louvre opens at 9 am [1].")
    assert text.endswith("[1] Museum FAQ, page 1")  # footnotes style
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-2] if e["choices"]]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert stored["messages"][-1]["content"] == text
    assert stored["messages"][-1]["id"] == last["message_id"]


def test_repeat_and_paraphrase_reuse_the_retrieval(cenv: ChatEnv, docs: None) -> None:
    bot = cenv.chatbot()
    url = f"/chatbots/{bot['id']}/chat/completions"

    def ask(question: str) -> dict[str, Any]:
        cenv.fake.push_replies("Answer [1].")
        with cenv.client() as c:
            r = c.post(
                url, json={"model": "x", "messages": [{"role": "user", "content": question}]}
            )
        assert r.status_code == 200, r.text
        return dict(r.json()["polymodal"]["retrieval"])

    def lookups(result: str) -> float:
        registry = cenv.server.state.metrics.registry
        value = registry.get_sample_value(
            "polymodal_semantic_cache_lookups_total", {"result": result}
        )
        return value or 0.0

    cenv.bump_kb(cenv.tenant_a, cenv.kb_a)  # a fresh scope: earlier tests asked this too
    searches = len(cenv.retriever.calls)
    before = {r: lookups(r) for r in ("hit", "miss", "guarded")}
    assert ask("When does the Louvre museum open?")["cache"] == "miss"
    hit = ask("When does the Louvre museum open?")
    assert hit["cache"] == "hit" and hit["similarity"] >= 0.99
    assert ask("When does the Louvre museum open ?")["cache"] == "hit"
    assert ask("When does the Louvre museum not open?")["cache"] == "guarded"
    assert len(cenv.retriever.calls) == searches + 2
    assert {r: lookups(r) - before[r] for r in before} == {"hit": 2, "miss": 1, "guarded": 1}
    # A new KB version starts an empty scope.
    cenv.bump_kb(cenv.tenant_a, cenv.kb_a)
    assert ask("When does the Louvre museum open?")["cache"] == "miss"


def test_long_conversation_is_summarised(cenv: ChatEnv, docs: None) -> None:
    """Trigger 120 tokens, window 2 messages (tests/chatbots/conftest.py)."""
    bot = cenv.chatbot()
    long_answer = "The Louvre opens at 9 am [1]." + " It is a very large museum." * 20
    with cenv.client() as c:
        conv = c.post(f"/chatbots/{bot['id']}/conversations").json()
        path = f"/chatbots/{bot['id']}/conversations/{conv['id']}/messages"
        for question in ("When does the Louvre open?", "Is the Louvre open on Tuesday?"):
            cenv.fake.push_replies(long_answer)
            assert c.post(path, json={"content": question}).status_code == 200
        assert not any("Summarise" in str(r["body"]) for r in _chat_requests(cenv))
        cenv.fake.push_replies("SUMMARY: user asked about Louvre hours.", "Yes [1].")
        r = c.post(path, json={"content": "When does the Louvre museum close?"})
        assert r.status_code == 200, r.text
        stored = c.get(f"/chatbots/{bot['id']}/conversations/{conv['id']}").json()
    calls = _chat_requests(cenv)
    summary_call, answer_call = calls[-2]["body"], calls[-1]["body"]
    assert "Summarise the conversation" in summary_call["messages"][0]["content"]
    assert "When does the Louvre open?" in summary_call["messages"][1]["content"]
    assert stored["summary"] == "SUMMARY: user asked about Louvre hours."
    system = answer_call["messages"][0]["content"]
    assert "Summary of the earlier conversation:\nSUMMARY: user asked about Louvre hours." in system
    # The window: the last 2 stored messages verbatim, then the new question.
    shown = [m["content"] for m in answer_call["messages"][1:]]
    assert shown == [
        "Is the Louvre open on Tuesday?",
        long_answer,
        "When does the Louvre museum close?",
    ]
    usage = [u for u in cenv.usage_rows(f"chatbot:{bot['id']}") if u.kind == "chat"]
    assert len(usage) == 4  # 3 answers + 1 summary, all billed to the chatbot


# --- bad input ----------------------------------------------------------------------------


def test_bad_input_is_a_clear_4xx(cenv: ChatEnv, docs: None) -> None:
    bot = cenv.chatbot()
    unknown = uuid.uuid4()
    with cenv.client() as c:
        conv = c.post(f"/chatbots/{bot['id']}/conversations").json()
        empty = c.post(
            f"/chatbots/{bot['id']}/conversations/{conv['id']}/messages", json={"content": "  "}
        )
        no_bot = c.post(f"/chatbots/{unknown}/conversations")
        no_conv = c.post(
            f"/chatbots/{bot['id']}/conversations/{unknown}/messages", json={"content": "hi"}
        )
        malformed = c.get("/chatbots/not-a-uuid")
        last_not_user = c.post(
            f"/chatbots/{bot['id']}/chat/completions",
            json={"model": "x", "messages": [{"role": "assistant", "content": "hi"}]},
        )
        empty_openai = c.post(
            f"/chatbots/{bot['id']}/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": ""}]},
        )
        stored = c.get(f"/chatbots/{bot['id']}/conversations/{conv['id']}").json()
    assert empty.status_code == 422 and empty.json()["error"]["param"] == "content"
    assert empty.json()["error"]["code"] == "empty_message"
    assert no_bot.status_code == 404 and str(unknown) in no_bot.json()["error"]["message"]
    assert no_conv.status_code == 404
    assert no_conv.json()["error"]["code"] == "conversation_not_found"
    assert malformed.status_code == 404 and "not-a-uuid" in malformed.json()["error"]["message"]
    assert last_not_user.status_code == 422 and "messages.0" in last_not_user.text
    assert empty_openai.status_code == 422
    assert empty_openai.json()["error"]["param"] == "messages.0.content"
    assert stored["messages"] == []  # nothing half-written
    assert _chat_requests(cenv) == []


def test_upstream_failure_stores_nothing(cenv: ChatEnv, docs: None) -> None:
    bot = cenv.chatbot()
    cenv.fake.set_faults(status=400, error_message="bad things")
    with cenv.client() as c:
        conv = c.post(f"/chatbots/{bot['id']}/conversations").json()
        r = c.post(
            f"/chatbots/{bot['id']}/conversations/{conv['id']}/messages",
            json={"content": "How tall is the Eiffel Tower?"},
        )
        stored = c.get(f"/chatbots/{bot['id']}/conversations/{conv['id']}").json()
    assert r.status_code == 400
    assert stored["messages"] == []
