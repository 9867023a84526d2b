"""Shared parts of the RAG benchmarks: the real knowledge-base stack (SQLite, Qdrant
local mode, the gateway with the local multilingual-e5-small) in a temporary folder,
an embedding cache kept in a file under bench/.cache so reruns do not re-embed, BEIR
readers and the metrics.

The file cache stands in for Redis/LRU behind the same `Cache` interface; it drops the
tenant from the key (each run makes new tenants) so vectors carry over between runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

from polymodal import wiring
from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.domain.principal import Principal, Role
from polymodal.observability.logging import configure_logging
from polymodal.rag import runtime
from polymodal.settings import Settings
from polymodal.tenancy import admin

HERE = Path(__file__).resolve().parent
CACHE_DIR = HERE / ".cache"
RESULTS = HERE / "results"
EVAL_DATA = Path("/work/shared/eval-data")


class FileCache:
    """A persistent `Cache` for embeddings (sqlite file); bench use only."""

    name = "bench-file"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
        self._lock = threading.Lock()

    @staticmethod
    def _norm(key: str) -> str:
        parts = key.split(":")  # emb:<tenant>:<model>:<kind>:<sha>
        return ":".join(parts[2:]) if len(parts) == 5 and parts[0] == "emb" else key

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM kv WHERE k = ?", (self._norm(key),)).fetchone()
        return None if row is None else bytes(row[0])

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (self._norm(key), value)
            )

    async def delete(self, key: str) -> bool:
        return False  # a benchmark never forgets a vector

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        raise NotImplementedError

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._db.close()

    def size(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM kv").fetchone()[0])


class Stack:
    """The knowledge-base service as `polymodal serve` builds it, in ``tmp``."""

    def __init__(self, tmp: Path, *, cache: FileCache | None, **overrides: Any) -> None:
        self.settings = Settings(
            environment="development",
            database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
            data_dir=tmp,
            qdrant_path=tmp / "qdrant",
            log_level="WARNING",
            usage_flush_interval_s=60,
            **overrides,
        )
        self.cache = cache

    async def __aenter__(self) -> Stack:
        s = self.settings
        configure_logging(level=s.log_level, json=False)
        self.engine = create_engine(s)
        await migrations.upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.http = wiring.http_client(s)
        self.providers = wiring.providers(s, self.http)
        catalog = wiring.catalog(s, {}, self.providers)
        self.gateway, self.usage = wiring.gateway(
            s,
            catalog=catalog,
            providers=self.providers,
            sessions=self.sessions,
            registry=wiring.health(s),
            metrics=None,
        )
        models = wiring.gateway_embeddings(self.gateway)
        self.rag = runtime.build(s, sessions=self.sessions, models=models, cache=self.cache)
        self.runner = runtime.runner(s, self.rag, self.sessions)
        self.service = runtime.service(
            s, self.rag, sessions=self.sessions, models=models, queue=self.runner
        )
        return self

    async def tenant(self, name: str) -> Principal:
        t = await admin.create_tenant(self.sessions, name=name, actor="bench")
        import uuid

        return Principal(tenant_id=t.id, user_id=uuid.uuid4(), roles=frozenset({Role.OWNER}))

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.stop()
        self.rag.close()
        for p in self.providers.values():
            await p.aclose()
        await self.http.aclose()
        await self.engine.dispose()


# --- data and metrics -----------------------------------------------------------------------


def read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with path.open(encoding="utf-8") as f:
        next(f)
        for line in f:
            q, d, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels[q][d] = int(score)
    return dict(qrels)


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def dedupe(ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine_info(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def load_average() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def run(coro: Any) -> Any:
    return asyncio.run(coro)
