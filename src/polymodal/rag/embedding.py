"""Embeddings for knowledge bases: through the gateway (failover, usage rows and cost
under the feature ``kb:<id>``), batched, behind a cache. The gateway is reached through
the `EmbeddingModels` protocol (services do not import each other; the app wires the
gateway in, see `polymodal.wiring.gateway_embeddings`).

The cache key is ``emb:<tenant>:<deployment>:<kind>:<sha256(text)>`` and the value the
vector as float32 bytes: Redis with a 48 h TTL in production, an in-process LRU on the
embedded profile (both are a `Cache`). The tenant is part of the key so one tenant's
cache hits never reveal what another has embedded, and deleting a document can drop
its entries without touching anyone else's.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from array import array
from collections.abc import Sequence
from typing import Literal, Protocol

from polymodal.cache.base import Cache
from polymodal.domain.catalog import Deployment
from polymodal.domain.principal import Principal, Role
from polymodal.tenancy.rbac import Permission

Kind = Literal["query", "document"]


def cache_key(tenant_id: uuid.UUID, model: str, kind: Kind, text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"emb:{tenant_id}:{model}:{kind}:{digest}"


def _pack(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


def _unpack(raw: bytes) -> list[float]:
    values = array("f")
    values.frombytes(raw)
    return values.tolist()


class EmbeddingCache:
    def __init__(self, cache: Cache, *, ttl_s: float) -> None:
        self._cache = cache
        self._ttl = ttl_s

    async def get_many(self, keys: Sequence[str]) -> list[list[float] | None]:
        raws = await asyncio.gather(*(self._cache.get(k) for k in keys))
        return [None if r is None else _unpack(r) for r in raws]

    async def put_many(self, items: Sequence[tuple[str, Sequence[float]]]) -> None:
        await asyncio.gather(*(self._cache.set(k, _pack(v), ttl_s=self._ttl) for k, v in items))

    async def delete_many(self, keys: Sequence[str]) -> None:
        await asyncio.gather(*(self._cache.delete(k) for k in keys))


NOBODY = uuid.UUID(int=0)


class EmbeddingModels(Protocol):
    """The gateway, as knowledge bases use it."""

    def resolve(self, name: str) -> Deployment:
        """The embeddings deployment ``name`` (404 naming it when there is none)."""
        ...

    async def embed(
        self,
        *,
        principal: Principal,
        feature: str,
        model: str,
        texts: list[str],
        kind: Kind,
        rate_limited: bool,
    ) -> list[list[float]]: ...


def acting_for(tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> Principal:
    """Who the embedding calls of a knowledge-base operation run as: the tenant (and the
    user who asked, for the usage ledger), allowed model use only. The operation itself
    was authorized already (kb:read to search, kb:write to add documents)."""
    return Principal(
        tenant_id=tenant_id,
        user_id=user_id or NOBODY,
        roles=frozenset({Role.MEMBER}),
        scopes=frozenset({Permission.MODELS_USE.value}),
    )


class Embedder:
    """Embed texts for one knowledge base, cache first, the rest in batches."""

    def __init__(self, models: EmbeddingModels, cache: EmbeddingCache, *, batch_size: int) -> None:
        self._models = models
        self._cache = cache
        self._batch = batch_size

    async def _call(
        self, principal: Principal, feature: str, model: str, texts: list[str], kind: Kind
    ) -> list[list[float]]:
        # Ingestion was admitted when the document was accepted: its batches are exempt
        # from per-minute rate limits (never from budgets). Queries are not.
        return await self._models.embed(
            principal=principal,
            feature=feature,
            model=model,
            texts=texts,
            kind=kind,
            rate_limited=kind == "query",
        )

    async def embed(
        self,
        *,
        principal: Principal,
        feature: str,
        model: str,
        texts: Sequence[str],
        kind: Kind,
    ) -> list[list[float]]:
        keys = [cache_key(principal.tenant_id, model, kind, t) for t in texts]
        found = await self._cache.get_many(keys)
        missing = [i for i, v in enumerate(found) if v is None]
        for start in range(0, len(missing), self._batch):
            batch = missing[start : start + self._batch]
            vectors = await self._call(principal, feature, model, [texts[i] for i in batch], kind)
            for i, v in zip(batch, vectors, strict=True):
                found[i] = v
            await self._cache.put_many([(keys[i], v) for i, v in zip(batch, vectors, strict=True)])
        return [v for v in found if v is not None]
