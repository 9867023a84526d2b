"""The usage ledger's writer: rows queue in memory and go to the database in batches,
off the response path.

Durability bound (until the tenancy issue adds a crash-safe spool): rows queued in the
last ``usage_flush_interval_s`` can be lost if the process is killed; a failed write is
retried on the next flush, and rows dropped because the queue overflowed are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import fields
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import system
from polymodal.domain.usage import UsageRecord
from polymodal.observability.logging import get_logger

log = get_logger("polymodal.usage")
_FIELDS = tuple(f.name for f in fields(UsageRecord))


def _row(record: UsageRecord) -> dict[str, Any]:
    # dataclasses.asdict deep-copies every value; the ledger writes many rows.
    return {name: getattr(record, name) for name in _FIELDS}


class UsageRecorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        flush_interval_s: float,
        batch_size: int,
        max_pending: int = 100_000,
    ) -> None:
        self._sessions = sessions
        self._interval = flush_interval_s
        self._batch = batch_size
        self._max_pending = max_pending
        self._pending: list[UsageRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.dropped = 0
        self.written = 0
        self.failed_writes = 0

    def record(self, row: UsageRecord) -> None:
        """Queue a row; never blocks and never raises."""
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(row)
        if len(self._pending) >= self._batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued now (tests and shutdown call this)."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._batch]
                try:
                    async with self._sessions() as session, session.begin():
                        await system.insert_usage(session, rows=[_row(r) for r in batch])
                except Exception:  # the database is down: keep the rows, try again later
                    self.failed_writes += 1
                    log.warning("usage write failed; will retry", pending=len(self._pending))
                    return
                del self._pending[: len(batch)]
                self.written += len(batch)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()
