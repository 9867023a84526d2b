"""The embedding cache: keyed by tenant + model + kind + sha256(text), batched misses,
Redis with a 48 h TTL in production and the in-process LRU otherwise."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from polymodal.cache.base import Cache
from polymodal.cache.memory import MemoryCache
from polymodal.cache.redis import RedisCache
from polymodal.domain.catalog import Deployment
from polymodal.domain.principal import Principal
from polymodal.rag.embedding import Embedder, EmbeddingCache, Kind, acting_for, cache_key

TTL = 48 * 3600.0


class CountingModels:
    """An `EmbeddingModels` that makes a vector from the text and records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Kind, bool]] = []

    def resolve(self, name: str) -> Deployment:
        raise NotImplementedError

    async def embed(
        self,
        *,
        principal: Principal,
        feature: str,
        model: str,
        texts: list[str],
        kind: Kind,
        rate_limited: bool,
    ) -> list[list[float]]:
        self.calls.append((feature, len(texts), kind, rate_limited))
        return [[float(len(t)), float(sum(map(ord, t)) % 97), 0.5] for t in texts]


async def _check(cache: Cache) -> None:
    models = CountingModels()
    embedder = Embedder(models, EmbeddingCache(cache, ttl_s=TTL), batch_size=32)
    a = acting_for(uuid.uuid4(), None)
    b = acting_for(uuid.uuid4(), None)
    texts = [f"chunk number {i}" for i in range(70)]
    first = await embedder.embed(
        principal=a, feature="kb:1", model="m", texts=texts, kind="document"
    )
    assert [n for _f, n, _k, _r in models.calls] == [32, 32, 6]
    assert all(kind == "document" and not limited for _f, _n, kind, limited in models.calls)
    again = await embedder.embed(
        principal=a, feature="kb:1", model="m", texts=texts, kind="document"
    )
    assert again == first and len(models.calls) == 3, "all cached"
    # Another tenant, another model or the query form of the same text: not shared.
    await embedder.embed(principal=b, feature="kb:2", model="m", texts=texts[:5], kind="document")
    await embedder.embed(principal=a, feature="kb:1", model="m2", texts=texts[:5], kind="document")
    await embedder.embed(principal=a, feature="kb:1", model="m", texts=texts[:5], kind="query")
    assert [n for _f, n, _k, _r in models.calls[3:]] == [5, 5, 5]
    assert models.calls[-1][3] is True, "query embeddings count against rate limits"
    # Deleting a document's entries forgets exactly those.
    keys = [cache_key(a.tenant_id, "m", "document", t) for t in texts[:10]]
    await EmbeddingCache(cache, ttl_s=TTL).delete_many(keys)
    await embedder.embed(principal=a, feature="kb:1", model="m", texts=texts[:12], kind="document")
    assert models.calls[-1][1] == 10


def test_key_names_tenant_model_kind_and_text_hash() -> None:
    tenant = uuid.uuid4()
    digest = hashlib.sha256(b"hello").hexdigest()
    assert cache_key(tenant, "local-e5-small", "document", "hello") == (
        f"emb:{tenant}:local-e5-small:document:{digest}"
    )


async def test_in_process_lru() -> None:
    await _check(MemoryCache(max_entries=1000))


@pytest.mark.redis
async def test_redis_with_48h_ttl(redis_url: str, redis_prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=redis_prefix, timeout_s=2.0)
    try:
        await _check(cache)
        tenant = uuid.uuid4()
        key = cache_key(tenant, "m", "document", "ttl probe")
        await EmbeddingCache(cache, ttl_s=TTL).put_many([(key, [1.0, 2.0])])
        ttl_ms = await cache.client.pttl(redis_prefix + key)
        assert TTL * 1000 - 60_000 < ttl_ms <= TTL * 1000
        assert await EmbeddingCache(cache, ttl_s=TTL).get_many([key]) == [[1.0, 2.0]]
    finally:
        await cache.close()
