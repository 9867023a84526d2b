"""Real clients against the live server: LangChain's ChatOpenAI and OpenAIEmbeddings, and
the local models of the embedded profile (no network at any time)."""

from __future__ import annotations

import math

import openai
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from tests.api.conftest import Env


def test_langchain_chat_invoke_and_stream(env: Env) -> None:
    llm = ChatOpenAI(
        model="fake-anthropic",
        base_url=env.base_url,
        api_key=env.key,  # type: ignore[arg-type]
        max_retries=0,
    )
    assert llm.invoke("hello langchain").content == "echo: hello langchain"
    streamed = "".join(str(chunk.content) for chunk in llm.stream("streamed words here"))
    assert streamed == "echo: streamed words here"


def test_langchain_embeddings(env: Env) -> None:
    embeddings = OpenAIEmbeddings(
        model="fake-cohere-embed",
        base_url=env.base_url,
        api_key=env.key,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # its length check downloads tiktoken files
        max_retries=0,
    )
    vectors = embeddings.embed_documents(["one", "two"])
    assert [len(v) for v in vectors] == [1024, 1024]
    assert len(embeddings.embed_query("one")) == 1024


def test_local_chat_model(env: Env) -> None:
    c = openai.OpenAI(base_url=env.base_url, api_key=env.key, max_retries=0)

    def ask() -> tuple[str, int, str | None]:
        completion = c.chat.completions.create(
            model="local-smollm2",
            messages=[{"role": "user", "content": "Write one sentence about the sea."}],
            max_tokens=24,
            temperature=0,
        )
        assert completion.usage is not None
        choice = completion.choices[0]
        return (
            choice.message.content or "",
            completion.usage.completion_tokens,
            choice.finish_reason,
        )

    text, tokens, finish = ask()
    assert len(text.split()) >= 3
    assert 0 < tokens <= 24
    assert finish in ("stop", "length")
    assert ask()[0] == text  # greedy decoding on a real model is deterministic

    stream = c.chat.completions.create(
        model="local-smollm2",
        messages=[{"role": "user", "content": "Count: one, two, three"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        usage = chunk.usage or usage
        pieces += [ch.delta.content or "" for ch in chunk.choices]
    assert "".join(pieces).strip()
    assert usage is not None and usage.completion_tokens <= 8


def test_local_embeddings_are_multilingual(env: Env) -> None:
    c = openai.OpenAI(base_url=env.base_url, api_key=env.key, max_retries=0)
    data = c.embeddings.create(
        model="local-e5-small",
        input=[
            "The cat sleeps on the sofa.",
            "Le chat dort sur le canapé.",
            "Quarterly revenue grew by eight percent.",
        ],
    ).data
    a, b, unrelated = (d.embedding for d in data)
    assert len(a) == 384

    def cos(x: list[float], y: list[float]) -> float:
        return sum(i * j for i, j in zip(x, y, strict=True)) / math.sqrt(
            sum(i * i for i in x) * sum(j * j for j in y)
        )

    assert cos(a, b) > cos(a, unrelated) + 0.05


def test_local_minilm_embeddings_through_the_sdk(env: Env) -> None:
    """The optional all-MiniLM-L6-v2 (the minilm extra, which the test set-up installs)."""
    c = openai.OpenAI(base_url=env.base_url, api_key=env.key, max_retries=0)
    listed = {m.id: m for m in c.models.list().data}
    assert "local-minilm" in listed
    data = c.embeddings.create(
        model="local-minilm",
        input=[
            "The cat sleeps on the sofa.",
            "A kitten is napping on the couch.",
            "Quarterly revenue grew by eight percent.",
        ],
    ).data
    a, b, unrelated = (d.embedding for d in data)
    assert len(a) == 384 and abs(sum(x * x for x in a) - 1.0) < 1e-3

    def cos(x: list[float], y: list[float]) -> float:
        return sum(i * j for i, j in zip(x, y, strict=True))

    assert cos(a, b) > cos(a, unrelated) + 0.2
