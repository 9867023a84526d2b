"""The real `openai` SDK talks to a chatbot: base_url=.../v1/chatbots/<id>, stream and
not, citations in the text as [n] and as the `citations` extension field."""

from __future__ import annotations

from typing import Any

import pytest
from openai import OpenAI

from tests.chatbots.conftest import ChatEnv
from tests.chatbots.test_chatbot_api import docs  # noqa: F401  (fixture)


@pytest.fixture
def bot(cenv: ChatEnv) -> dict[str, Any]:
    return cenv.chatbot(system_prompt="You answer questions about Paris.")


def _client(cenv: ChatEnv, bot: dict[str, Any]) -> OpenAI:
    return OpenAI(base_url=f"{cenv.base_url}/chatbots/{bot['id']}", api_key=cenv.dev_a)


def test_openai_sdk_non_stream(cenv: ChatEnv, bot: dict[str, Any], docs: None) -> None:  # noqa: F811
    cenv.fake.push_replies("It is 330 metres tall [1].")
    completion = _client(cenv, bot).chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "How tall is the Eiffel Tower in Paris?"}],
    )
    assert completion.choices[0].message.content == "It is 330 metres tall [1]."
    assert completion.choices[0].finish_reason == "stop"
    extra = completion.model_extra or {}
    cited = [c for c in extra["citations"] if c["cited"]]
    assert [(c["n"], c["title"], c["page"]) for c in cited] == [(1, "Paris guide", 3)]
    assert extra["polymodal"]["not_in_knowledge_base"] is False
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_openai_sdk_stream(cenv: ChatEnv, bot: dict[str, Any], docs: None) -> None:  # noqa: F811
    cenv.fake.push_replies("The Louvre opens at 9 am [1] and closes at 6 pm [1].")
    stream = _client(cenv, bot).chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "When does the Louvre museum open and close?"}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The Louvre opens at 9 am [1] and closes at 6 pm [1]."
    last = chunks[-1].model_extra or {}
    assert last["citations"][0]["title"] == "Museum FAQ" and last["citations"][0]["cited"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_sdk_stateless_history_and_stored_conversation(
    cenv: ChatEnv,
    bot: dict[str, Any],
    docs: None,  # noqa: F811
) -> None:
    client = _client(cenv, bot)
    cenv.fake.push_replies("330 metres [1].")
    client.chat.completions.create(
        model="chatbot",
        messages=[
            {"role": "system", "content": "ignored: the chatbot's persona rules"},
            {"role": "user", "content": "Tell me about Paris."},
            {"role": "assistant", "content": "Paris is the capital of France."},
            {"role": "user", "content": "How tall is the Eiffel Tower?"},
        ],
    )
    sent = [r for r in cenv.fake.requests if r["path"].endswith("/chat/completions")][-1]
    roles = [m["role"] for m in sent["body"]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "ignored" not in sent["body"]["messages"][0]["content"]

    with cenv.client() as c:
        conv = c.post(f"/chatbots/{bot['id']}/conversations").json()
    cenv.fake.push_replies("330 metres [1].")
    completion = client.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "How tall is the Eiffel Tower?"}],
        extra_body={"conversation_id": conv["id"]},
    )
    assert (completion.model_extra or {})["conversation_id"] == conv["id"]
    with cenv.client() as c:
        stored = c.get(f"/chatbots/{bot['id']}/conversations/{conv['id']}").json()
    assert [m["content"] for m in stored["messages"]] == [
        "How tall is the Eiffel Tower?",
        "330 metres [1].",
    ]


def test_openai_sdk_unknown_chatbot_is_a_404(cenv: ChatEnv) -> None:
    import openai

    client = OpenAI(
        base_url=f"{cenv.base_url}/chatbots/00000000-0000-0000-0000-000000000000",
        api_key=cenv.dev_a,
        max_retries=0,
    )
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert "chatbot '00000000-0000-0000-0000-000000000000' does not exist" in str(raised.value)
