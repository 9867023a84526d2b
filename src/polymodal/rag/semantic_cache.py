"""The semantic query cache: a query whose embedding is within cosine ``threshold`` of a
recent query for the same tenant, knowledge bases, KB versions and ``top_k`` reuses that
query's retrieval, provided the guard features (numbers, negations, named entities; see
``query_guards``) are equal too.

The scope of an entry is ``(tenant, sorted (kb_id, version) pairs, top_k)``: a KB that
changes gets a new version and so a new, empty scope; old scopes simply expire. Each
scope keeps a bounded list of its most recent query vectors (newest first) and a payload
per entry; a lookup is one brute-force cosine over at most ``max_entries`` vectors in
numpy (a few thousand 384-dim vectors take well under a millisecond).

Two stores behind one protocol: in-process (embedded profile) and Redis (production:
replicas share hits). A store that fails degrades to a miss, never to an error.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
import redis.asyncio as aioredis
from numpy.typing import NDArray

from polymodal.domain.rag import Hit, Retrieval
from polymodal.observability.logging import get_logger
from polymodal.rag import query_guards

Vector = NDArray[np.float32]
_ID_BYTES = 16
_SIG_BYTES = 8

log = get_logger("polymodal.rag.semantic_cache")


@dataclass(frozen=True, slots=True)
class Scope:
    """Who and what a cached retrieval is valid for."""

    tenant_id: uuid.UUID
    kb_versions: tuple[tuple[uuid.UUID, int], ...]
    top_k: int

    @classmethod
    def of(cls, tenant_id: uuid.UUID, kb_versions: dict[uuid.UUID, int], top_k: int) -> Scope:
        return cls(tenant_id, tuple(sorted(kb_versions.items(), key=lambda kv: kv[0].hex)), top_k)

    def key(self) -> str:
        """``<tenant>:<digest>``: the tenant stays readable (erasure can find its keys)."""
        kbs = ",".join(f"{kb.hex}@{v}" for kb, v in self.kb_versions)
        digest = hashlib.blake2b(f"{kbs}|k={self.top_k}".encode(), digest_size=12).hexdigest()
        return f"{self.tenant_id.hex}:{digest}"


@dataclass(frozen=True, slots=True)
class Cached:
    """A hit: the stored retrieval, how similar the query was, what the search cost."""

    retrieval: Retrieval
    similarity: float
    search_s: float  # how long the original search took (what this hit saved)
    query: str = ""  # the cached query that served this one (diagnostics; never logged)


def _normalized(vector: Sequence[float] | Vector) -> Vector:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def encode_retrieval(retrieval: Retrieval, search_s: float, query: str = "") -> bytes:
    hits = [
        {
            "kb_id": h.kb_id.hex,
            "doc_id": h.doc_id.hex,
            "chunk_no": h.chunk_no,
            "text": h.text,
            "score": h.score,
            "title": h.title,
            "page": h.page,
            "section": h.section,
            "char_start": h.char_start,
            "char_end": h.char_end,
            "dense_score": h.dense_score,
        }
        for h in retrieval.hits
    ]
    versions = {k.hex: v for k, v in retrieval.kb_versions.items()}
    # The query travels with its retrieval: the entity guard compares the two texts.
    return orjson.dumps(
        {"hits": hits, "kb_versions": versions, "search_s": search_s, "query": query}
    )


def decode_retrieval(raw: bytes) -> tuple[Retrieval, float, str]:
    data: dict[str, Any] = orjson.loads(raw)
    hits = [
        Hit(
            **{
                **h,
                "kb_id": uuid.UUID(h["kb_id"]),
                "doc_id": uuid.UUID(h["doc_id"]),
            }
        )
        for h in data["hits"]
    ]
    versions = {uuid.UUID(k): int(v) for k, v in data["kb_versions"].items()}
    retrieval = Retrieval(hits=hits, kb_versions=versions, cached=True)
    return retrieval, float(data["search_s"]), str(data.get("query", ""))


CANDIDATES = 4  # vector matches a lookup hands to the entity guard, best first


@dataclass(frozen=True, slots=True)
class Match:
    """A lookup's outcome: the guarded candidates at or above the threshold (row index,
    cosine; best first), and whether any row met the threshold on cosine alone."""

    candidates: tuple[tuple[int, float], ...]
    near: bool
    best: float = 0.0  # the highest cosine of any row (guards aside)


def best_match(
    matrix: Vector,
    signatures: Sequence[bytes],
    query: Vector,
    signature: bytes | None,
    threshold: float,
    limit: int = CANDIDATES,
) -> Match:
    """Rows at or above ``threshold`` whose signature equals ``signature`` (``None``:
    guards off), most similar first, at most ``limit``."""
    if matrix.shape[0] == 0:
        return Match((), near=False)
    sims = matrix @ query
    best = float(np.max(sims))
    if signature is not None:
        mask = np.fromiter((s == signature for s in signatures), dtype=bool, count=len(signatures))
        sims = np.where(mask, sims, -2.0)
    order = np.argsort(-sims)[:limit]
    found = tuple((int(i), float(sims[i])) for i in order if sims[i] >= threshold)
    return Match(found, near=best >= threshold, best=best)


MISS = Match((), near=False)


class VectorStore(Protocol):
    """Where scopes keep their recent query vectors and payloads."""

    name: str

    async def lookup(
        self, scope: Scope, vector: Vector, signature: bytes | None, threshold: float
    ) -> tuple[list[tuple[bytes, float]], Match]:
        """Payloads and cosines of the signature-matching candidates, best first."""
        ...

    async def add(self, scope: Scope, vector: Vector, signature: bytes, payload: bytes) -> None: ...

    async def clear_tenant(self, tenant_id: uuid.UUID) -> int:
        """Forget every scope of a tenant (GDPR erasure); returns entries removed."""
        ...


@dataclass(slots=True)
class _MemoryScope:
    expires: float
    entries: deque[tuple[bytes, bytes, Vector]]  # (entry id, signature, vector), newest first
    payloads: dict[bytes, bytes]


class MemoryVectorStore:
    """The embedded profile's store: one process, bounded scopes and entries, TTL."""

    name = "in-process"

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_s: float,
        max_scopes: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._max_scopes = max_scopes
        self._clock = clock
        self._scopes: OrderedDict[str, _MemoryScope] = OrderedDict()

    def _scope(self, scope: Scope) -> _MemoryScope | None:
        key = scope.key()
        found = self._scopes.get(key)
        if found is not None and found.expires <= self._clock():
            del self._scopes[key]
            return None
        return found

    async def lookup(
        self, scope: Scope, vector: Vector, signature: bytes | None, threshold: float
    ) -> tuple[list[tuple[bytes, float]], Match]:
        found = self._scope(scope)
        if found is None or not found.entries:
            return [], MISS
        ids, sigs, vectors = zip(*found.entries, strict=True)
        match = best_match(np.stack(vectors), sigs, vector, signature, threshold)
        return [(found.payloads[ids[i]], sim) for i, sim in match.candidates], match

    async def add(self, scope: Scope, vector: Vector, signature: bytes, payload: bytes) -> None:
        key = scope.key()
        found = self._scope(scope)
        if found is None:
            found = _MemoryScope(0.0, deque(), {})
            self._scopes[key] = found
        # Like Redis: each write pushes the scope's expiry out again.
        found.expires = self._clock() + self._ttl_s
        entry = uuid.uuid4().bytes
        found.entries.appendleft((entry, signature, vector))
        found.payloads[entry] = payload
        while len(found.entries) > self._max_entries:
            old, _, _ = found.entries.pop()
            found.payloads.pop(old, None)
        self._scopes.move_to_end(key)
        while len(self._scopes) > self._max_scopes:
            self._scopes.popitem(last=False)

    async def clear_tenant(self, tenant_id: uuid.UUID) -> int:
        mine = [k for k in self._scopes if k.startswith(tenant_id.hex + ":")]
        removed = sum(len(self._scopes.pop(k).entries) for k in mine)
        return removed


class RedisVectorStore:
    """Production store. Per scope: a LIST ``<p>semcache:<scope>:v`` of packed
    ``entry id | signature | float32 vector`` (newest first, trimmed to ``max_entries``)
    and one payload key per entry, all with the scope's TTL."""

    name = "redis"

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, max_entries: int, ttl_s: float
    ) -> None:
        self._client = client
        self._prefix = prefix + "semcache:"
        self._max_entries = max_entries
        self._ttl_ms = max(int(ttl_s * 1000), 1)

    def _vectors_key(self, scope: Scope) -> str:
        return f"{self._prefix}{scope.key()}:v"

    def _payload_key(self, scope: Scope, entry: bytes) -> str:
        return f"{self._prefix}{scope.key()}:e:{entry.hex()}"

    async def lookup(
        self, scope: Scope, vector: Vector, signature: bytes | None, threshold: float
    ) -> tuple[list[tuple[bytes, float]], Match]:
        raw: list[bytes | str] = await self._client.lrange(self._vectors_key(scope), 0, -1)
        width = _ID_BYTES + _SIG_BYTES + vector.nbytes
        rows = [r for r in raw if isinstance(r, bytes) and len(r) == width]
        if not rows:  # (rows of another model's width are ignored)
            return [], MISS
        table = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width)
        matrix = table[:, _ID_BYTES + _SIG_BYTES :].copy().view(np.float32)
        sigs = [r[_ID_BYTES : _ID_BYTES + _SIG_BYTES] for r in rows]
        match = best_match(matrix, sigs, vector, signature, threshold)
        if not match.candidates:
            return [], match
        keys = [self._payload_key(scope, rows[i][:_ID_BYTES]) for i, _ in match.candidates]
        payloads = await self._client.mget(keys)
        found = [
            (p if isinstance(p, bytes) else str(p).encode(), sim)
            for p, (_, sim) in zip(payloads, match.candidates, strict=True)
            if p is not None  # trimmed or expired between the two reads
        ]
        return found, match

    async def add(self, scope: Scope, vector: Vector, signature: bytes, payload: bytes) -> None:
        entry = uuid.uuid4().bytes
        key = self._vectors_key(scope)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._payload_key(scope, entry), payload, px=self._ttl_ms)
            pipe.lpush(key, entry + signature + vector.astype(np.float32).tobytes())
            pipe.ltrim(key, 0, self._max_entries - 1)
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()
        # Payloads of trimmed entries are not deleted here: they expire with their TTL.

    async def clear_tenant(self, tenant_id: uuid.UUID) -> int:
        removed = 0
        async for key in self._client.scan_iter(match=f"{self._prefix}{tenant_id.hex}:*"):
            removed += int(await self._client.delete(key))
        return removed


class SemanticCache:
    """Lookup and store of retrievals by query embedding, guarded (see module doc)."""

    def __init__(self, store: VectorStore, *, threshold: float, guards: bool = True) -> None:
        self.store = store
        self.threshold = threshold
        self.guards = guards

    async def get(
        self, scope: Scope, vector: Sequence[float] | Vector, query: str
    ) -> tuple[Cached | None, bool]:
        """The cached retrieval for ``query`` (None: a miss), and whether a vector match
        at or above the threshold was refused by a guard."""
        mine = query_guards.features(query)
        try:
            candidates, match = await self.store.lookup(
                scope,
                _normalized(vector),
                mine.signature() if self.guards else None,
                self.threshold,
            )
        except Exception as e:  # a broken cache is a miss, not an outage
            log.warning("semantic_cache_lookup_failed", store=self.store.name, error=repr(e))
            return None, False
        for payload, similarity in candidates:
            retrieval, search_s, cached_query = decode_retrieval(payload)
            if self.guards and not query_guards.entities_match(
                query, mine.entities, cached_query, query_guards.entities(cached_query)
            ):
                continue
            hit = Cached(retrieval, similarity, search_s, cached_query)
            return hit, False
        return None, match.near

    async def put(
        self,
        scope: Scope,
        vector: Sequence[float] | Vector,
        query: str,
        retrieval: Retrieval,
        search_s: float,
    ) -> None:
        signature = query_guards.features(query).signature()
        try:
            await self.store.add(
                scope, _normalized(vector), signature, encode_retrieval(retrieval, search_s, query)
            )
        except Exception as e:
            log.warning("semantic_cache_store_failed", store=self.store.name, error=repr(e))
