"""`polymodal admin usage report` and `polymodal admin audit verify`: the operator's view
of the usage ledger across tenants and the audit chain check. Registered on the admin
command group by polymodal.cli; the shared helpers are imported when a command runs (so
importing this module never imports the CLI in a cycle)."""

from __future__ import annotations

import csv
import sys
from decimal import Decimal
from typing import Annotated, Literal

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import ledger
from polymodal.db.scope import system_session
from polymodal.domain.errors import InvalidRequest
from polymodal.tenancy import audit, reports

usage_app = typer.Typer(no_args_is_help=True, help="Usage and cost across tenants.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit log.")


@usage_app.command("report")
def usage_report(
    by: Annotated[
        Literal["tenant", "feature", "deployment", "day"],
        typer.Option(help="tenant, or split each tenant by feature, deployment or day."),
    ] = "tenant",
    from_: Annotated[
        str | None, typer.Option("--from", help="Start date (YYYY-MM-DD, UTC).")
    ] = None,
    to: Annotated[str | None, typer.Option(help="End date, included (YYYY-MM-DD).")] = None,
    fmt: Annotated[
        Literal["table", "csv"], typer.Option("--format", help="table or csv.")
    ] = "table",
) -> None:
    """Cost by tenant (default: the last 30 days), from every tenant's ledger."""
    from polymodal.cli import _fail, _run, _settings

    try:
        span = reports.period(from_, to)
    except InvalidRequest as e:
        _fail(e.message, 2)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[ledger.TenantCost]:
        async with system_session(sessions) as session:
            return await ledger.cost_by_tenant(session, start=span.start, end=span.end, then_by=by)

    rows = _run(_settings(), work)
    header = ["tenant", "tenant_id", "plan"] + ([by] if by != "tenant" else [])
    header += ["requests", "tokens_in", "tokens_out", "cost_usd"]
    table = [
        [r.tenant, str(r.tenant_id), r.plan]
        + ([r.group] if by != "tenant" else [])
        + [str(r.requests), str(r.tokens_in), str(r.tokens_out), str(r.cost)]
        for r in rows
    ]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
        return
    typer.echo(f"usage {span.start:%Y-%m-%d %H:%M} to {span.end:%Y-%m-%d %H:%M} UTC")
    typer.echo("\t".join(header))
    for line in table:
        typer.echo("\t".join(line))
    total = sum((r.cost for r in rows), Decimal(0))
    typer.echo(f"total cost: {total} USD over {len({r.tenant_id for r in rows})} tenants")


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[
        str | None, typer.Option(help="Tenant name or id (default: every tenant).")
    ] = None,
) -> None:
    """Check the audit hash chain: prints OK or the first broken event; exit code 1 when
    any tenant's chain is broken."""
    from polymodal.cli import _run, _settings

    verdicts = _run(_settings(), lambda s: audit.verify(s, tenant=tenant))
    failed = False
    for v in verdicts:
        if v.ok:
            typer.echo(f"OK\t{v.tenant}\t{v.tenant_id}\t{v.events} events\thead {v.head}")
        else:
            failed = True
            typer.echo(f"BROKEN\t{v.tenant}\t{v.tenant_id}\tat event {v.seq}: {v.problem}")
    raise typer.Exit(1 if failed else 0)
