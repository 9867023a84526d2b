"""`polymodal` command line: serve, migrate, admin, doctor."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, NoReturn, TypeVar

import typer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from polymodal import wiring as gateway_factory
from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.domain.errors import PolymodalError
from polymodal.gateway.catalog import CatalogError
from polymodal.gateway.routing import RoutesError
from polymodal.identity_cli import jwt_app, user_password, user_status
from polymodal.ledger_cli import audit_app, usage_app
from polymodal.settings import Settings, SettingsError, load_settings, settings_markdown
from polymodal.tenancy import admin as admin_service
from polymodal.tenancy import economics_admin

T = TypeVar("T")
CLI_ACTOR = "cli"

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
admin_app = typer.Typer(no_args_is_help=True, help="Tenants, users and API keys.")
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants.")
user_app = typer.Typer(no_args_is_help=True, help="Users and their roles.")
key_app = typer.Typer(no_args_is_help=True, help="API keys.")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(tenant_app, name="tenant")
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(key_app, name="key")
admin_app.add_typer(jwt_app, name="jwt")
user_app.command("password")(user_password)
user_app.command("status")(user_status)
admin_app.add_typer(usage_app, name="usage")
admin_app.add_typer(audit_app, name="audit")


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"polymodal: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as e:
        _fail(f"cannot start: {e}", 2)


async def _database_error(engine: AsyncEngine) -> str | None:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as e:  # reported, not raised: the caller decides what it means
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"{type(e).__name__}: {reason[:200]}"
    return None


def _run(settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run one admin action against the configured database, with clean errors."""

    async def main() -> T:
        engine = create_engine(settings)
        try:
            error = await _database_error(engine)
            if error:
                _fail(f"POLYMODAL_DATABASE_URL: database unreachable ({error})", 2)
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except PolymodalError as e:
        _fail(f"error: {e.message}")


# --- serve and migrate -------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve the HTTP API (uvicorn with uvloop and httptools)."""
    import uvicorn

    settings = _settings()

    try:
        http = gateway_factory.http_client(settings)
        providers = gateway_factory.providers(settings, http)
        gateway_factory.routes(settings, gateway_factory.catalog(settings, os.environ, providers))
    except (CatalogError, RoutesError) as e:
        _fail(f"cannot start: {e}", 2)

    async def preflight() -> str | None:
        engine = create_engine(settings)
        try:
            if error := await _database_error(engine):
                return f"POLYMODAL_DATABASE_URL: database unreachable ({error})"
            current = await migrations.current_revision(engine)
            if current != migrations.head_revision():
                return "the database schema is not up to date; run `polymodal migrate`"
            return None
        finally:
            await engine.dispose()

    if problem := asyncio.run(preflight()):
        _fail(f"cannot start: {problem}", 2)
    uvicorn.run(
        "polymodal.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        proxy_headers=True,
    )


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option("-Q", "--queues", help="Comma-separated queues (e.g. ingest).")
    ] = "ingest",
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", help="Processes.")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork or solo.")] = "prefork",
) -> None:
    """Run a Celery worker (production profile: needs POLYMODAL_REDIS_URL)."""
    settings = _settings()
    if not settings.redis_url:
        _fail("polymodal worker needs POLYMODAL_REDIS_URL (the Celery broker)")
    from polymodal.worker import main as worker_main

    worker_main(["-Q", queues, "-c", str(concurrency), "--pool", pool, "-l", "INFO"])


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    downgrade: Annotated[
        str | None, typer.Option(help="Downgrade to this revision instead (e.g. base).")
    ] = None,
) -> None:
    """Apply database migrations (Alembic)."""
    settings = _settings()

    async def work(_: async_sessionmaker[AsyncSession]) -> str | None:
        engine = create_engine(settings)
        try:
            if downgrade:
                await migrations.downgrade(engine, downgrade)
            else:
                await migrations.upgrade(engine, revision)
            return await migrations.current_revision(engine)
        finally:
            await engine.dispose()

    current = _run(settings, work)
    typer.echo(f"database at revision {current or 'base'}")


# --- admin -------------------------------------------------------------------------------


@tenant_app.command("create")
def tenant_create(
    name: str, plan: Annotated[str, typer.Option(help="free, pro or enterprise.")] = "free"
) -> None:
    """Create a tenant."""
    tenant = _run(
        _settings(),
        lambda s: admin_service.create_tenant(s, name=name, plan=plan, actor=CLI_ACTOR),
    )
    typer.echo(f"{tenant.id}\t{tenant.name}\t{tenant.plan}")


@tenant_app.command("policy")
def tenant_policy(
    name: str,
    allowed_providers: Annotated[
        list[str] | None, typer.Option(help="Only these provider wires (repeatable).")
    ] = None,
    allowed_deployments: Annotated[
        list[str] | None, typer.Option(help="Only these deployments (repeatable).")
    ] = None,
    max_tier: Annotated[str | None, typer.Option(help="simple, complex or critical.")] = None,
    default_tier: Annotated[
        str | None, typer.Option(help="Tier for model 'auto' instead of classifying.")
    ] = None,
    continue_streams: Annotated[
        bool, typer.Option(help="Continue broken streams on another deployment.")
    ] = True,
) -> None:
    """Set a tenant's routing policy (replaces the previous one)."""
    policy: dict[str, object] = {"continue_streams": continue_streams}
    if allowed_providers:
        policy["allowed_providers"] = allowed_providers
    if allowed_deployments:
        policy["allowed_deployments"] = allowed_deployments
    if max_tier:
        policy["max_tier"] = max_tier
    if default_tier:
        policy["default_tier"] = default_tier
    saved = _run(
        _settings(),
        lambda s: admin_service.set_routing_policy(s, tenant=name, policy=policy, actor=CLI_ACTOR),
    )
    typer.echo(json.dumps(saved, sort_keys=True))


@tenant_app.command("limits")
def tenant_limits(
    name: str,
    plan: Annotated[str | None, typer.Option(help="Move the tenant to this plan.")] = None,
    rpm: Annotated[
        int | None,
        typer.Option(min=1, max=2**31 - 1, help="Requests per minute (may exceed the plan)."),
    ] = None,
    tpm: Annotated[
        int | None,
        typer.Option(min=1, max=2**31 - 1, help="Tokens per minute (may exceed the plan)."),
    ] = None,
    clear: Annotated[bool, typer.Option(help="Drop the overrides: plan defaults.")] = False,
) -> None:
    """Change a tenant's plan or rate limits (operator; tenants may only narrow theirs)."""
    settings = _settings()
    saved = _run(
        settings,
        lambda s: economics_admin.operator_set_limits(
            s,
            tenant=name,
            plans=list(settings.plan_limits),
            plan=plan,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            clear=clear,
            actor=CLI_ACTOR,
        ),
    )
    plan_name, requests, tokens = saved
    typer.echo(
        json.dumps(
            {"plan": plan_name, "requests_per_minute": requests, "tokens_per_minute": tokens}
        )
    )


@tenant_app.command("list")
def tenant_list() -> None:
    """List tenants."""
    for t in _run(_settings(), admin_service.list_tenants):
        typer.echo(f"{t.id}\t{t.name}\t{t.plan}\t{t.status}")


@user_app.command("create")
def user_create(
    tenant: Annotated[str, typer.Option(help="Tenant name or id.")],
    email: Annotated[str, typer.Option(help="The user's email.")],
    role: Annotated[str, typer.Option(help="owner, admin, developer, member or viewer.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Add a user to a tenant with a role."""
    user_id = _run(
        _settings(),
        lambda s: admin_service.add_user(
            s, tenant=tenant, email=email, role=role, actor=CLI_ACTOR, display_name=name
        ),
    )
    typer.echo(f"{user_id}\t{email.lower()}\t{role}")


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Option(help="Tenant name or id.")],
    email: Annotated[str, typer.Option(help="The member the key acts as.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    scope: Annotated[list[str] | None, typer.Option(help="Scope (repeatable).")] = None,
    expires_days: Annotated[float | None, typer.Option(help="Expire after this many days.")] = None,
) -> None:
    """Create an API key. Its secret is printed once and never stored."""
    expires = None if expires_days is None else timedelta(days=expires_days)
    issued = _run(
        _settings(),
        lambda s: admin_service.issue_key(
            s,
            tenant=tenant,
            email=email,
            actor=CLI_ACTOR,
            name=name,
            scopes=scope,
            expires_in=expires,
        ),
    )
    typer.echo(f"key id: {issued.id}", err=True)
    typer.echo("the secret below is shown once; store it now:", err=True)
    typer.echo(issued.secret)


@key_app.command("revoke")
def key_revoke(
    key_id: uuid.UUID,
    tenant: Annotated[str, typer.Option(help="Tenant name or id.")],
) -> None:
    """Revoke an API key."""
    _run(
        _settings(),
        lambda s: admin_service.revoke_key(s, tenant=tenant, key_id=key_id, actor=CLI_ACTOR),
    )
    typer.echo(f"revoked {key_id}")


@key_app.command("list")
def key_list(tenant: Annotated[str, typer.Option(help="Tenant name or id.")]) -> None:
    """List a tenant's keys (never their secrets)."""
    for k in _run(_settings(), lambda s: admin_service.list_keys(s, tenant=tenant)):
        state = "revoked" if k.revoked_at else "active"
        expires = k.expires_at.isoformat() if k.expires_at else "never"
        typer.echo(f"{k.id}\tpm_{k.prefix}_…\t{k.name}\t{state}\texpires {expires}")


@admin_app.command("bootstrap")
def bootstrap() -> None:
    """First run: create the `demo` tenant and an owner key when no tenant exists."""
    settings = _settings()
    key_file = settings.data_dir / "demo-key.txt"
    issued = _run(settings, lambda s: admin_service.bootstrap_demo(s, key_file=key_file))
    if issued is None:
        hint = f" (demo key in {key_file})" if key_file.exists() else ""
        typer.echo(f"tenants exist; nothing to bootstrap{hint}")
        return
    typer.echo(f"created tenant 'demo' with owner key (saved to {key_file}, mode 600):")
    typer.echo(issued.secret)


@admin_app.command("index-optimize")
def index_optimize() -> None:
    """Build HNSW indexes in the embedded knowledge-base index (Qdrant Edge). Stop
    `polymodal serve` first: the folder is held by one process, and optimizing holds
    the CPU for about a minute per 100k chunks. Searches then take about half as long."""
    from polymodal.rag import runtime
    from polymodal.rag.edge_index import EdgeIndex

    settings = _settings()
    index = runtime.open_index(settings)
    if not isinstance(index, EdgeIndex):
        _fail("nothing to do: the index is a Qdrant server (or the client engine)")
    try:
        done = index.optimize()
    except Exception as e:  # the WAL lock of a running server, mostly
        _fail(f"cannot optimize ({str(e).splitlines()[0][:200]}); is `polymodal serve` running?")
    finally:
        index.close()
    for name, (points, indexed) in done.items():
        typer.echo(f"{name}\t{points} points\t{indexed} indexed vectors")
    if not done:
        typer.echo("no collections yet")


# --- doctor and docs -----------------------------------------------------------------------


@app.command()
def doctor() -> None:
    """Show the active profile and check that each part is reachable."""
    from polymodal.doctor import run_checks

    settings = _settings()
    results = asyncio.run(run_checks(settings))
    failed = False
    for check in results:
        mark = {"ok": "ok  ", "fail": "FAIL", "skip": "--  "}[check.status]
        typer.echo(f"[{mark}] {check.concern:<9} {check.backend:<22} {check.detail}")
        failed = failed or check.status == "fail"
    raise typer.Exit(1 if failed else 0)


@app.command("config-docs")
def config_docs() -> None:
    """Print the configuration reference (Markdown) generated from the Settings model."""
    sys.stdout.write(settings_markdown())


def main() -> None:  # pragma: no cover - console entry point
    app()
