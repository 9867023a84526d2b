"""Where ingestion jobs run. The queue carries ids only; the job row says what to do.

- `InProcessRunner` (embedded profile): asyncio tasks inside `polymodal serve`, at most
  ``concurrency`` at once; on start it re-queues every job a previous process left
  queued or running (crash resume). One job failing never stops the others.
- Celery (production) lives in `polymodal.worker` (services never import Celery); it
  satisfies the same `JobQueue` protocol.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import knowledge as repo
from polymodal.db.scope import system_session
from polymodal.observability.logging import get_logger
from polymodal.rag.ingest import Ingestor

log = get_logger("polymodal.rag.jobs")


class JobQueue(Protocol):
    async def enqueue(self, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None: ...


def retry_delay(attempt: int, *, base_s: float = 2.0, cap_s: float = 60.0) -> float:
    return float(min(cap_s, base_s * 2 ** max(attempt - 1, 0)))


class InProcessRunner:
    def __init__(
        self,
        *,
        ingestor: Ingestor,
        sessions: async_sessionmaker[AsyncSession],
        concurrency: int,
        lease_s: float,
        delay: Callable[[int], float] = retry_delay,
        max_rounds: int = 10,
    ) -> None:
        self._ingestor = ingestor
        self._sessions = sessions
        self._slots = asyncio.Semaphore(concurrency)
        self._lease_s = lease_s
        self._delay = delay
        self._max_rounds = max_rounds  # bounds a job that keeps crashing this process
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: set[uuid.UUID] = set()

    async def start(self) -> int:
        """Re-queue what a previous process left unfinished; returns how many."""
        try:
            async with system_session(self._sessions) as s:  # cross-tenant: resume scan only
                pending = await repo.pending_jobs(s, lease_s=0.0)
        except Exception as e:  # a database that is down or unmigrated must not stop start-up
            log.warning("ingestion jobs not resumed", error=type(e).__name__)
            return 0
        for tenant_id, job_id in pending:
            # Nothing runs in this process yet: a "running" row is an orphan of a dead one.
            self._spawn(tenant_id, job_id, takeover=True)
        if pending:
            log.info("resuming ingestion jobs", count=len(pending))
        return len(pending)

    async def enqueue(self, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
        self._spawn(tenant_id, job_id, takeover=False)

    def _spawn(self, tenant_id: uuid.UUID, job_id: uuid.UUID, *, takeover: bool) -> None:
        if job_id in self._queued:
            return
        self._queued.add(job_id)
        task = asyncio.create_task(self._run(tenant_id, job_id, takeover))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, tenant_id: uuid.UUID, job_id: uuid.UUID, takeover: bool) -> None:
        attempt = 0
        try:
            while True:
                attempt += 1
                async with self._slots:
                    try:
                        outcome = await self._ingestor.run(tenant_id, job_id, takeover=takeover)
                    except Exception:  # a bug in one job must not kill the runner
                        log.exception("ingestion job crashed", job_id=str(job_id))
                        outcome = "retry"
                if outcome not in ("retry", "busy") or attempt >= self._max_rounds:
                    # Gave up: the row still says queued/running; the next start resumes it.
                    return
                await asyncio.sleep(self._lease_s if outcome == "busy" else self._delay(attempt))
        finally:
            self._queued.discard(job_id)

    async def drain(self) -> None:
        """Wait until every queued job has finished (tests, shutdown of a CLI run)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
