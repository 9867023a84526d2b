"""The ledger writer: rows reach the spool before they count as queued, orphaned segments
replay exactly once, a database outage keeps every row, and losses are counted."""

from __future__ import annotations

import shutil
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models import Tenant as TenantRow
from polymodal.db.models import UsageEvent
from polymodal.db.scope import system_session
from polymodal.observability.metrics import UsageMetrics
from polymodal.tenancy.spool import Spool
from polymodal.tenancy.usage import UsageRecorder, encode
from tests.conftest import DatabaseTarget
from tests.ledger.conftest import new_tenant, usage, utc
from tests.support import TcpProxy

AT = utc(2026, 10, 1)


def _recorder(
    sessions: async_sessionmaker[AsyncSession],
    spool_dir: Path,
    metrics: UsageMetrics | None = None,
    **kw: int,
) -> UsageRecorder:
    return UsageRecorder(
        sessions,
        flush_interval_s=3600,  # flushed by the tests
        batch_size=kw.pop("batch_size", 100),
        spool=Spool(spool_dir, max_bytes=kw.pop("max_bytes", 10 * 1024 * 1024)),
        metrics=metrics,
        **kw,
    )


def _metrics() -> UsageMetrics:
    return UsageMetrics(CollectorRegistry(), deployments=["fake-openai"], plans=["free", "pro"])


async def _stored(sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID) -> list[str]:
    async with system_session(sessions) as s:
        result = await s.execute(
            select(UsageEvent.request_id).where(UsageEvent.tenant_id == tenant)
        )
        return sorted(result.scalars())


def _segments(spool_dir: Path) -> list[Path]:
    return sorted(p for p in spool_dir.glob("*.jsonl") if p.stat().st_size > 0)


def _sample(metrics: UsageMetrics, name: str, **labels: str) -> float:
    """A counter's value (0 when that label set was never counted)."""
    counter = {
        "polymodal_tokens_total": metrics.tokens,
        "polymodal_cost_usd_total": metrics.cost,
        "polymodal_usage_rows_dropped_total": metrics.dropped,
    }[name]
    for family in counter.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_a_row_is_on_disk_before_it_counts_as_queued(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    tenant = await new_tenant(sessions)
    rec = _recorder(sessions, tmp_path / "spool")
    await rec.start()
    row = usage(tenant.id, cost="0.5", at=AT, feature="template:blog")
    rec.record(row)
    [segment] = _segments(tmp_path / "spool")
    assert str(row.event_id).encode() in segment.read_bytes()  # before any flush
    await rec.flush()
    assert await _stored(sessions, tenant.id) == [row.request_id]
    assert _segments(tmp_path / "spool") == []  # committed rows leave the spool
    await rec.stop()


async def test_an_orphaned_segment_replays_exactly_once(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    tenant = await new_tenant(sessions)
    spool_dir = tmp_path / "spool"
    dead = _recorder(sessions, spool_dir)
    await dead.start()
    rows = [usage(tenant.id, cost="0.1", at=AT) for _ in range(5)]
    for r in rows:
        dead.record(r)
    # The process "dies": its descriptors close (dropping the locks) without a flush.
    dead._spool.close()  # type: ignore[union-attr]
    [orphan] = _segments(spool_dir)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(orphan, copy)

    metrics = _metrics()
    fresh = _recorder(sessions, spool_dir, metrics)
    await fresh.start()  # replays on start-up
    assert await _stored(sessions, tenant.id) == sorted(r.request_id for r in rows)
    assert fresh.replayed == 5
    assert _segments(spool_dir) == []
    assert (
        _sample(
            metrics,
            "polymodal_tokens_total",
            plan="pro",
            feature_kind="api",
            deployment="fake-openai",
            direction="in",
        )
        == 50
    )
    await fresh.stop()

    # The same segment replayed again (say, restored from a backup): nothing doubles.
    shutil.copy(copy, spool_dir / "restored-1.jsonl")
    again = _recorder(sessions, spool_dir)
    await again.start()
    await again.stop()
    assert await _stored(sessions, tenant.id) == sorted(r.request_id for r in rows)
    assert _segments(spool_dir) == []


async def test_a_live_segment_is_never_replayed_by_another_process(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    tenant = await new_tenant(sessions)
    spool_dir = tmp_path / "spool"
    alive = _recorder(sessions, spool_dir)
    await alive.start()
    alive.record(usage(tenant.id, cost="1", at=AT))
    other = _recorder(sessions, spool_dir)
    await other.start()  # sees a locked segment: leaves it alone
    assert await _stored(sessions, tenant.id) == []
    assert len(_segments(spool_dir)) == 1
    await other.stop()
    await alive.stop()
    assert len(await _stored(sessions, tenant.id)) == 1


async def test_a_torn_line_and_a_full_queue_are_counted(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    tenant = await new_tenant(sessions)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    good = usage(tenant.id, cost="0.2", at=AT)
    torn = encode(usage(tenant.id, cost="0.3", at=AT))[:40]  # a power cut mid-write
    (spool_dir / "dead-1.jsonl").write_bytes(encode(good) + torn)
    metrics = _metrics()
    rec = _recorder(sessions, spool_dir, metrics, max_pending=2)
    await rec.start()
    assert await _stored(sessions, tenant.id) == [good.request_id]
    assert _sample(metrics, "polymodal_usage_rows_dropped_total", reason="spool_corrupt") == 1
    for _ in range(3):
        rec.record(usage(tenant.id, cost="0.1", at=AT))
    assert _sample(metrics, "polymodal_usage_rows_dropped_total", reason="queue_full") == 1
    await rec.stop()
    assert len(await _stored(sessions, tenant.id)) == 3


async def test_rows_of_an_erased_tenant_are_dropped_and_counted(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    kept, gone = await new_tenant(sessions), await new_tenant(sessions)
    metrics = _metrics()
    rec = _recorder(sessions, tmp_path / "spool", metrics)
    await rec.start()
    rec.record(usage(kept.id, cost="1", at=AT))
    rec.record(usage(gone.id, cost="1", at=AT))
    async with system_session(sessions) as s, s.begin():
        await s.execute(delete(TenantRow).where(TenantRow.id == gone.id))
    await rec.flush()
    assert len(await _stored(sessions, kept.id)) == 1
    assert _sample(metrics, "polymodal_usage_rows_dropped_total", reason="tenant_gone") == 1
    assert _segments(tmp_path / "spool") == []
    await rec.stop()


@pytest.mark.parametrize("migrated_db", ["postgres"], indirect=True)
async def test_a_database_outage_keeps_every_row(
    migrated_db: DatabaseTarget, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """PostgreSQL behind a proxy we cut: the rows wait on disk and all arrive once."""
    from tests.conftest import PG_URL

    tenant = await new_tenant(sessions)
    port = int(PG_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy("127.0.0.1", port)
    await proxy.restore()
    url = PG_URL.replace(f":{port}/", f":{proxy.port}/")
    base = migrated_db.settings(database_connect_timeout_s=1)
    engine = create_engine(base.model_copy(update={"database_url": url}))
    try:
        rec = _recorder(session_factory(engine), tmp_path / "spool", _metrics())
        await rec.start()
        await proxy.cut()
        rows = [usage(tenant.id, cost=str(Decimal(i) / 7)[:12], at=AT) for i in range(4)]
        for r in rows[:2]:
            rec.record(r)
        await rec.flush()  # fails: the rows stay spooled (fsynced), not only in memory
        assert rec.failed_writes == 1 and rec.pending > 0
        for r in rows[2:]:
            rec.record(r)
        await rec.flush()
        assert await _stored(sessions, tenant.id) == []
        await proxy.restore()
        await rec.flush()
        assert await _stored(sessions, tenant.id) == sorted(r.request_id for r in rows)
        assert rec.pending == 0 and _segments(tmp_path / "spool") == []
        await rec.stop()
    finally:
        await proxy.cut()
        await engine.dispose()
    async with system_session(sessions) as s:
        n = await s.execute(
            select(func.count()).select_from(UsageEvent).where(UsageEvent.tenant_id == tenant.id)
        )
        assert n.scalar_one() == 4


async def test_an_unusable_spool_folder_degrades_to_memory(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    tenant = await new_tenant(sessions)
    rec = _recorder(sessions, blocker / "spool")
    await rec.start()  # does not raise: the server still starts
    rec.record(usage(tenant.id, cost="1", at=AT))
    await rec.flush()
    assert len(await _stored(sessions, tenant.id)) == 1
    await rec.stop()
