"""What the usage ledger costs on the hot path, and how fast it drains.

    .venv/bin/python bench/usage_ledger.py [--rows 20000] [--out bench/results/usage_ledger.json]

`record()` is what a request pays: it encodes the row and appends it to the crash spool
with one write(2), so that a killed process loses nothing. Every call is timed and the
p50/p99/mean reported, with and without the spool. Then the queued rows are flushed to an
SQLite database and the rows per second written are reported. The machine has 2 cores
shared with other work: compare the two rows, not absolute numbers between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402

from polymodal.db import migrate, system  # noqa: E402
from polymodal.db.engine import create_engine, session_factory  # noqa: E402
from polymodal.db.scope import system_session  # noqa: E402
from polymodal.domain.usage import UsageRecord  # noqa: E402
from polymodal.settings import Settings  # noqa: E402
from polymodal.tenancy.spool import Spool  # noqa: E402
from polymodal.tenancy.usage import UsageRecorder  # noqa: E402


def _row(tenant: uuid.UUID) -> UsageRecord:
    return UsageRecord(
        tenant_id=tenant,
        user_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        request_id=uuid.uuid4().hex,
        feature="template:blog-post",
        kind="chat",
        deployment="openai-gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        tokens_in=812,
        tokens_out=240,
        cost=Decimal("0.0002658000"),
        latency_ms=412.5,
        ttfb_ms=180.2,
        stream=True,
        status="ok",
        tier="simple",
        task="writing",
    )


async def _run(rows: int, tmp: Path) -> dict[str, object]:
    settings = Settings(
        environment="test",
        secret_key="bench-" + "x" * 40,
        database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        data_dir=tmp,
    )
    engine = create_engine(settings)
    await migrate.upgrade(engine)
    sessions = session_factory(engine)
    async with system_session(sessions) as s, s.begin():
        tenant = (await system.create_tenant(s, name="bench", plan="pro")).id
    result: dict[str, object] = {}
    for label, spool in (
        ("memory only", None),
        ("with spool", Spool(tmp / "spool", max_bytes=2**31)),
    ):
        recorder = UsageRecorder(
            sessions, flush_interval_s=3600, batch_size=500, spool=spool, max_pending=rows + 1
        )
        await recorder.start()
        batch = [_row(tenant) for _ in range(rows)]
        times = []
        for r in batch:
            t0 = time.perf_counter_ns()
            recorder.record(r)
            times.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter()
        await recorder.flush()
        drained = time.perf_counter() - t0
        await recorder.stop()
        times.sort()
        result[label] = {
            "record_p50_us": round(times[len(times) // 2] / 1000, 2),
            "record_p99_us": round(times[int(len(times) * 0.99)] / 1000, 2),
            "record_mean_us": round(statistics.fmean(times) / 1000, 2),
            "flush_rows_per_s": round(rows / drained),
        }
    await engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--out", default=str(ROOT / "bench/results/usage_ledger.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_run(args.rows, Path(tmp)))
    print(f"{'writer':<14}{'record p50 µs':>15}{'p99 µs':>10}{'mean µs':>10}{'flush rows/s':>15}")
    for label, r in result.items():
        assert isinstance(r, dict)
        print(
            f"{label:<14}{r['record_p50_us']:>15}{r['record_p99_us']:>10}"
            f"{r['record_mean_us']:>10}{r['flush_rows_per_s']:>15}"
        )
    out = {
        "rows": args.rows,
        "results": result,
        "machine": machine_info(),
        "note": "2 shared cores, other engineers' work running",
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
