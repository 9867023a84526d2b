"""Celery workers (production): the ``ingest`` queue of knowledge-base ingestion.

    polymodal worker -Q ingest        (or: celery -A polymodal.worker worker -Q ingest)

A message carries only ids (tenant, job); the job row in the database says what to do
and what happened (DESIGN.md section 12). Tasks are ``acks_late`` and rejected when
the worker is lost, so a ``kill -9`` mid-task redelivers the message; the job then
resumes after its last finished batch (`polymodal.rag.ingest`). A duplicate delivery
of a finished job is a no-op.

Each worker process builds its own knowledge-base stack lazily (after the fork) from
the same settings as ``polymodal serve``, with one event loop reused across tasks.
This module sits at the app layer: services never import Celery.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from dataclasses import dataclass

from celery import Celery, Task

from polymodal import wiring
from polymodal.cache import open_cache
from polymodal.db.engine import create_engine, session_factory
from polymodal.observability.logging import configure_logging, get_logger
from polymodal.rag import runtime
from polymodal.rag.jobs import retry_delay
from polymodal.settings import Settings, load_settings
from polymodal.tenancy.usage import UsageRecorder

INGEST_QUEUE = "ingest"
INGEST_TASK = "polymodal.rag.ingest"
log = get_logger("polymodal.worker")

app = Celery("polymodal")


def configure(celery: Celery, settings: Settings) -> Celery:
    if not settings.redis_url:
        raise RuntimeError("Celery needs POLYMODAL_REDIS_URL (the broker)")
    celery.conf.update(
        broker_url=settings.redis_url,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=INGEST_QUEUE,
        task_routes={INGEST_TASK: {"queue": INGEST_QUEUE}},
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # Longer than any ingestion takes, so Redis does not redeliver a running task (a
        # dead worker's task comes back after it, and the job's lease decides who runs).
        broker_transport_options={
            "visibility_timeout": settings.ingest_visibility_timeout_s,
            "global_keyprefix": settings.redis_key_prefix + "celery:",
        },
        worker_hijack_root_logger=False,
    )
    return celery


@dataclass
class _Runtime:
    loop: asyncio.AbstractEventLoop
    stack: runtime.RagStack
    settings: Settings
    usage: UsageRecorder


_runtime: _Runtime | None = None
_runtime_pid = 0
_lock = threading.Lock()


def _build(settings: Settings) -> _Runtime:
    loop = asyncio.new_event_loop()

    async def build() -> tuple[runtime.RagStack, UsageRecorder]:
        engine = create_engine(settings)
        sessions = session_factory(engine)
        http = wiring.http_client(settings)
        providers = wiring.providers(settings, http)
        catalog = wiring.catalog(settings, dict(os.environ), providers, http=http)
        gateway, usage = wiring.gateway(
            settings,
            catalog=catalog,
            providers=providers,
            sessions=sessions,
            registry=wiring.health(settings),
            metrics=None,
        )
        await usage.start()
        cache = open_cache(settings)
        stack = runtime.build(
            settings,
            sessions=sessions,
            models=wiring.gateway_embeddings(gateway),
            cache=runtime.embedding_store(settings, cache),
        )
        return stack, usage

    stack, usage = loop.run_until_complete(build())
    return _Runtime(loop, stack, settings, usage)


def _current() -> _Runtime:
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            settings = load_settings()  # the worker is a composition root, like the app
            configure_logging(level=settings.log_level, json=settings.log_json)
            _runtime, _runtime_pid = _build(settings), os.getpid()
        return _runtime


@app.task(name=INGEST_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)  # type: ignore[untyped-decorator]
def ingest(self: Task, tenant_id: str, job_id: str) -> str:
    rt = _current()
    try:
        outcome: str = rt.loop.run_until_complete(
            rt.stack.ingestor.run(uuid.UUID(tenant_id), uuid.UUID(job_id))
        )
    finally:
        # The loop idles between tasks: write this task's usage rows now.
        rt.loop.run_until_complete(rt.usage.flush())
    if outcome == "retry":
        raise self.retry(countdown=retry_delay(self.request.retries + 1))
    if outcome == "busy":  # another worker holds a fresh lease; look again after it
        raise self.retry(countdown=rt.settings.ingest_job_lease_s)
    return outcome


class CeleryQueue:
    """`polymodal.rag.jobs.JobQueue` on Celery: sends the ids to the ``ingest`` queue."""

    def __init__(self, settings: Settings, celery: Celery = app) -> None:
        self._celery = configure(celery, settings)

    async def enqueue(self, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
        await asyncio.to_thread(
            self._celery.send_task,
            INGEST_TASK,
            args=[str(tenant_id), str(job_id)],
            queue=INGEST_QUEUE,
        )


def main(argv: list[str]) -> None:
    """``polymodal worker``: run a Celery worker with the product's settings."""
    configure(app, load_settings())
    app.worker_main(["worker", *argv])


def _autoconfigure() -> None:
    # `celery -A polymodal.worker worker` imports this module: configure it from the
    # environment then (the CLI path configures explicitly).
    if os.environ.get("POLYMODAL_REDIS_URL"):
        try:
            configure(app, load_settings())
        except Exception as e:  # a bad setting is reported by the worker's first task
            log.warning("celery not configured", error=str(e))


_autoconfigure()
