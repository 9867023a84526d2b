"""Ingestion on real Celery workers (`polymodal worker -Q ingest` subprocesses) with Redis
as the broker and PostgreSQL as the job store: jobs finish, a duplicate message is a
no-op, and a worker killed with SIGKILL mid-job leaves the job finished exactly once by
the next worker, resumed after its last batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from polymodal import wiring
from polymodal.db import knowledge as repo
from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models_rag import IngestJob
from polymodal.db.scope import tenant_session
from polymodal.domain.principal import Principal, Role
from polymodal.rag import runtime
from polymodal.rag.index import collection_name
from polymodal.settings import Settings
from polymodal.tenancy import admin
from polymodal.worker import CeleryQueue
from tests.conftest import PG_URL, REDIS_URL, DatabaseTarget, need_service

TEXT = "\n\n".join(
    f"Section {i}. Glacier {i} retreated {i * 3} metres last year, the survey team said."
    for i in range(40)
)


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYMODAL_")}
    for name in (
        "environment", "secret_key", "database_url", "database_schema", "redis_url",
        "redis_key_prefix", "data_dir", "qdrant_path", "ingest_queue", "ingest_job_lease_s",
        "ingest_visibility_timeout_s", "embedding_batch_size", "chunk_tokens", "log_json",
    ):  # fmt: skip
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"POLYMODAL_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


class Workers:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "polymodal", "worker", "-Q", "ingest", "--pool", "solo"],
            env=_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def wait_for(check: Callable[[], Any], *, within_s: float, what: str) -> Any:
    """Poll an observable condition (a job row) with a deadline."""
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[DatabaseTarget]:
    need_service("PostgreSQL", PG_URL, 5432)
    target = DatabaseTarget("postgres", tmp_path)
    await target.create()
    yield target
    await target.drop()


async def test_celery_workers_ingest_resume_after_kill_and_ignore_duplicates(
    pg: DatabaseTarget, tmp_path: Path, redis_prefix: str
) -> None:
    need_service("Redis", REDIS_URL, 6379)
    settings = pg.settings(
        redis_url=REDIS_URL,
        redis_key_prefix=redis_prefix,
        qdrant_path=tmp_path / "qdrant-worker",
        ingest_queue="celery",
        ingest_job_lease_s=4,
        ingest_visibility_timeout_s=3,
        embedding_batch_size=2,
        chunk_tokens=48,
    )
    engine = create_engine(settings)
    await migrations.upgrade(engine)
    sessions = session_factory(engine)
    tenant = await admin.create_tenant(sessions, name=f"celery-{uuid.uuid4().hex[:8]}", actor="t")
    p = Principal(tenant_id=tenant.id, user_id=uuid.uuid4(), roles=frozenset({Role.DEVELOPER}))
    # The API side: its own (unused) Qdrant folder, since local mode is one process only.
    http = wiring.http_client(settings)
    providers = wiring.providers(settings, http)
    gateway, _usage = wiring.gateway(
        settings,
        catalog=wiring.catalog(settings, {}, providers),
        providers=providers,
        sessions=sessions,
        registry=wiring.health(settings),
        metrics=None,
    )
    api_side = settings.model_copy(update={"qdrant_path": tmp_path / "qdrant-api"})
    models = wiring.gateway_embeddings(gateway)
    stack = runtime.build(api_side, sessions=sessions, models=models)
    queue = CeleryQueue(settings)
    service = runtime.service(settings, stack, sessions=sessions, models=models, queue=queue)
    workers = Workers(settings, tmp_path)

    async def job_of(doc_id: uuid.UUID) -> IngestJob | None:
        async with tenant_session(sessions, tenant.id) as s:
            jobs = await repo.latest_jobs(s, tenant_id=tenant.id, doc_ids=[doc_id])
        return jobs.get(doc_id)

    try:
        kb = await service.create_kb(p, name="glaciers")
        first = workers.start()
        doc = await service.add_upload(
            p, kb.id, filename="survey.txt", content_type=None, data=TEXT.encode()
        )
        # Kill the worker once it has finished a batch or two, mid-document.
        await wait_for(
            lambda: _running_with_progress(job_of, doc.id), within_s=180, what="first batches"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = (await job_of(doc.id)).chunks_done  # type: ignore[union-attr]
        assert killed_at > 0

        workers.start()  # the message comes back after the visibility timeout
        done = await wait_for(
            lambda: _finished(job_of, doc.id), within_s=240, what="resumed job to finish"
        )
        assert done.status == "done" and done.attempts == 2
        assert done.chunks_done == done.chunks_total > killed_at

        # The same message delivered again (a duplicate) changes nothing.
        version = (await service.get_kb(p, kb.id)).version
        await queue.enqueue(tenant.id, done.id)
        second_doc = await service.add_upload(
            p, kb.id, filename="note.txt", content_type=None, data=b"Ice cores hold old air."
        )
        await wait_for(lambda: _finished(job_of, second_doc.id), within_s=120, what="second doc")
        again = await job_of(doc.id)
        assert again is not None and again.attempts == 2 and again.status == "done"
        assert (await service.get_kb(p, kb.id)).version == version + 1  # the second doc only
    finally:
        workers.stop_all()
        stack.close()
        for provider in providers.values():
            await provider.aclose()
        await http.aclose()

    # The worker's index holds each chunk exactly once (ids are (doc, chunk_no)).
    index = runtime.open_index(settings)
    try:
        coll = collection_name("local-e5-small", 384)
        n = await index.count(coll, tenant_id=tenant.id, kb_id=kb.id, doc_id=doc.id)
        assert n == done.chunks_total
        _dense, sparse = await index.search(
            coll,
            tenant_id=tenant.id,
            kb_ids=[kb.id],
            dense=None,
            sparse=stack.retriever._bm25.query("glacier 17 retreated"),
            limit=3,
        )
        assert "Glacier 17" in sparse[0].payload["text"]
    finally:
        index.close()
        await engine.dispose()


async def _running_with_progress(job_of: Any, doc_id: uuid.UUID) -> bool:
    job = await job_of(doc_id)
    return bool(job and job.status == "running" and 0 < job.chunks_done < job.chunks_total - 4)


async def _finished(job_of: Any, doc_id: uuid.UUID) -> IngestJob | None:
    job = await job_of(doc_id)
    return job if job is not None and job.status in ("done", "failed") else None
