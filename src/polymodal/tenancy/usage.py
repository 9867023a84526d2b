"""The usage ledger's writer: rows are spooled to local disk, queued in memory and written
to the database in batches, off the response path.

Loss bound (stated, and tested by killing a real server with SIGKILL):
- the process dies (SIGKILL, OOM, crash): nothing is lost. ``record`` appends the row to
  the crash spool (tenancy/spool.py) with one ``write(2)`` before it returns, and the
  next start replays orphaned spool segments. A replay skips event ids already stored,
  so a row is never counted twice.
- the machine dies (power, kernel): rows recorded in the last ``usage_flush_interval_s``
  (each flush fsyncs the segment it rotates out before writing it).
- overload: beyond ``usage_max_pending`` rows in memory, rows are dropped; beyond
  ``usage_spool_max_bytes`` on disk, rows are kept in memory only. Both are counted
  (``polymodal_usage_rows_dropped_total``, ``polymodal_usage_spool_errors_total``).
A failed database write keeps the rows (in the spool and, for unspooled rows, in memory)
and retries at the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import ledger
from polymodal.db.scope import system_session  # batches and plan lookups mix tenants
from polymodal.domain.usage import UsageRecord
from polymodal.observability.logging import get_logger
from polymodal.observability.metrics import UsageMetrics
from polymodal.tenancy.spool import Segment, Spool

log = get_logger("polymodal.usage")
_FIELDS = tuple(f.name for f in fields(UsageRecord))
_UUIDS = ("tenant_id", "user_id", "key_id", "event_id")
UNKNOWN_PLAN = "unknown"


def ledger_row(record: UsageRecord) -> dict[str, Any]:
    # dataclasses.asdict deep-copies every value; the ledger writes many rows.
    return {name: getattr(record, name) for name in _FIELDS}


def _default(value: object) -> str:
    # orjson writes exact uuid.UUID only; asyncpg hands out its own UUID subclass.
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def encode(record: UsageRecord) -> bytes:
    """One spool line (orjson writes UUIDs and aware datetimes natively)."""
    return orjson.dumps(ledger_row(record), default=_default) + b"\n"


def decode(line: bytes) -> UsageRecord:
    data = orjson.loads(line)
    for name in _UUIDS:
        if data.get(name) is not None:
            data[name] = uuid.UUID(data[name])
    data["cost"] = Decimal(data["cost"])
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return UsageRecord(**data)


@dataclass(eq=False, slots=True)
class _Unit:
    """Rows waiting for the database: a rotated spool segment and/or rows held in memory
    (``rows`` None means "read them back from the segment")."""

    segment: Segment | None
    rows: list[UsageRecord] | None
    unspooled: list[UsageRecord] = field(default_factory=list)
    counted: bool = True  # in the metrics already (False for a dead process's segment)
    torn_reported: bool = False  # its unreadable lines were counted once


class UsageRecorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        flush_interval_s: float,
        batch_size: int,
        max_pending: int = 100_000,
        spool: Spool | None = None,
        metrics: UsageMetrics | None = None,
        plan_ttl_s: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self._interval = flush_interval_s
        self._batch = batch_size
        self._max_pending = max_pending
        self._spool = spool
        self._metrics = metrics
        self._plan_ttl = plan_ttl_s
        self._plans: dict[uuid.UUID, tuple[str, float]] = {}
        self._pending: list[UsageRecord] = []
        self._unspooled: list[UsageRecord] = []
        self._backlog: list[_Unit] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.dropped = 0
        self.written = 0
        self.replayed = 0
        self.failed_writes = 0

    # --- the hot path ----------------------------------------------------------------------

    def record(self, row: UsageRecord) -> None:
        """Spool and queue a row; never blocks on the network and never raises."""
        if len(self._pending) >= self._max_pending:
            self._drop("queue_full")
            return
        if self._spool is not None:
            try:
                line = encode(row)
            except (TypeError, ValueError):  # a value orjson cannot write: keep it in memory
                log.exception("usage row not spoolable")
                line = b""
            if not line or not self._spool.append(line):
                self._unspooled.append(row)
                if self._metrics is not None:
                    self._metrics.spool_errors.inc()
        self._pending.append(row)
        if len(self._pending) >= self._batch:
            self._wake.set()

    def _drop(self, reason: str, n: int = 1) -> None:
        self.dropped += n
        if self._metrics is not None:
            self._metrics.dropped.labels(reason).inc(n)

    @property
    def pending(self) -> int:
        """Rows not yet in the database (a segment parked on disk counts as one)."""
        held = sum(len(u.rows) if u.rows is not None else 1 for u in self._backlog)
        return len(self._pending) + held

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._spool is not None:
            await self._open_spool(self._spool)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def _open_spool(self, spool: Spool) -> None:
        """Open the spool and replay what dead processes left in it."""
        try:
            await asyncio.to_thread(spool.open)
        except OSError as e:  # degrade, loudly: a crash now loses up to one flush interval
            log.error(
                "usage spool unavailable; rows are held in memory only",
                path=str(spool.directory),
                error=str(e),
            )
            self._spool = None
            return
        for segment in await asyncio.to_thread(spool.claim_orphans):
            self._backlog.append(_Unit(segment, None, counted=False))
        if self._backlog:
            log.info("replaying usage spool", segments=len(self._backlog))
            await self.flush()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._spool is not None:
            self._spool.close()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the writer must outlive any one bad flush
                log.exception("usage flush failed")

    # --- writing -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything queued now (tests and shutdown call this)."""
        async with self._lock:
            batch, self._pending = self._pending, []
            unspooled, self._unspooled = self._unspooled, []
            segment = self._spool.rotate() if self._spool is not None else None
            if batch:
                await self._count(batch)
                self._backlog.append(_Unit(segment, batch, unspooled))
            for unit in list(self._backlog):
                if not await self._write(unit):
                    self.failed_writes += 1
                    await self._park()
                    break
                self._backlog.remove(unit)
                if unit.segment is not None and self._spool is not None:
                    self._spool.release(unit.segment)
            if self._metrics is not None:
                self._metrics.backlog.set(self.pending)

    async def _park(self) -> None:
        """The database is down: make the waiting segments durable and let their rows
        leave memory (they are read back from disk on the next try)."""
        for unit in self._backlog:
            if unit.rows is None:
                continue
            if unit.segment is not None:
                await asyncio.to_thread(Spool.sync, unit.segment)
            else:  # no spool: memory is all there is
                unit.unspooled = unit.rows
            unit.rows = None
        held = sum(len(u.unspooled) for u in self._backlog)
        while held > self._max_pending:  # unspooled rows only live here: bound them
            oldest = next(u for u in self._backlog if u.unspooled)
            held -= len(oldest.unspooled)
            self._drop("queue_full", len(oldest.unspooled))
            oldest.unspooled = []

    async def _rows_of(self, unit: _Unit) -> list[UsageRecord]:
        if unit.rows is not None:
            return unit.rows  # spooled or not, every row of the flush is here
        rows: list[UsageRecord] = []
        corrupt = 0
        lines = [] if unit.segment is None else await asyncio.to_thread(Spool.read, unit.segment)
        for line in lines:
            try:
                rows.append(decode(line))
            except (ValueError, TypeError, KeyError):  # a torn last line after a power cut
                corrupt += 1
        if corrupt and not unit.torn_reported:
            unit.torn_reported = True
            self._drop("spool_corrupt", corrupt)
            log.warning("unreadable usage spool lines dropped", lines=corrupt)
        return rows + unit.unspooled

    async def _write(self, unit: _Unit) -> bool:
        replay = unit.rows is None
        rows = await self._rows_of(unit)
        if not unit.counted:  # a dead process's segment: its counters died with it
            await self._count(rows)
            unit.counted = True
        try:
            for i in range(0, len(rows), self._batch):
                await self._insert(rows[i : i + self._batch])
        except Exception:  # the database is down: keep the rows, try again later
            log.warning("usage write failed; will retry", pending=len(rows))
            return False
        self.written += len(rows)
        if replay:
            self.replayed += len(rows)
        return True

    async def _insert(self, rows: list[UsageRecord]) -> None:
        try:
            async with system_session(self._sessions) as session, session.begin():
                await ledger.insert_usage(session, rows=[ledger_row(r) for r in rows])
        except IntegrityError:
            # A tenant erased while its rows waited: keep the rows of tenants that exist.
            async with system_session(self._sessions) as session, session.begin():
                live = await ledger.tenant_plans(
                    session, tenant_ids=list({r.tenant_id for r in rows})
                )
                kept = [r for r in rows if str(r.tenant_id) in live]
                if len(kept) == len(rows):
                    raise
                self._drop("tenant_gone", len(rows) - len(kept))
                await ledger.insert_usage(session, rows=[ledger_row(r) for r in kept])

    # --- metrics -----------------------------------------------------------------------------

    async def _count(self, rows: Iterable[UsageRecord]) -> None:
        if self._metrics is None:
            return
        rows = list(rows)
        plans = await self._plans_of({r.tenant_id for r in rows})
        for r in rows:
            self._metrics.call(
                plan=plans.get(r.tenant_id, UNKNOWN_PLAN),
                feature=r.feature,
                deployment=r.deployment,
                tokens_in=r.tokens_in,
                tokens_out=r.tokens_out,
                cost=float(r.cost),
            )

    async def _plans_of(self, tenant_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Plan per tenant for metric labels, cached; ``unknown`` when the database is down."""
        now = time.monotonic()
        found = {t: p for t, (p, exp) in self._plans.items() if t in tenant_ids and exp > now}
        missing = tenant_ids - found.keys()
        if missing:
            try:
                async with system_session(self._sessions) as session:
                    loaded = await ledger.tenant_plans(session, tenant_ids=list(missing))
            except Exception:
                return found
            for tid in missing:
                plan = loaded.get(str(tid))
                if plan is not None:
                    found[tid] = plan
                    self._plans[tid] = (plan, now + self._plan_ttl)
        return found
