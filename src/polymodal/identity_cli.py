"""`polymodal admin jwt rotate|list|retire` and `polymodal admin user password|status`:
the operator's side of identity. Registered by polymodal.cli; its shared helpers are
imported when a command runs (so importing this module never imports the CLI in a
cycle)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.memory import MemoryCache
from polymodal.tenancy.identity import USER_STATUSES
from polymodal.tenancy.identity_factory import build_identity, key_ring

jwt_app = typer.Typer(no_args_is_help=True, help="JWT signing keys.")


@jwt_app.command("rotate")
def jwt_rotate(
    overlap_s: Annotated[
        float | None,
        typer.Option(help="How long the old key still verifies (default: access TTL + leeway)."),
    ] = None,
) -> None:
    """Start signing with a new key; the old one verifies for the overlap, then retires."""
    from polymodal.cli import _run, _settings

    settings = _settings()

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        ring = key_ring(settings, sessions)
        return (await ring.rotate(overlap_s=overlap_s)).kid

    typer.echo(f"signing with {_run(settings, work)}")


@jwt_app.command("list")
def jwt_list() -> None:
    """Signing keys that still verify, newest first (public data only)."""
    from polymodal.cli import _run, _settings

    settings = _settings()

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, str]]:
        ring = key_ring(settings, sessions)
        await ring.load()
        return ring.describe()

    for k in _run(settings, work):
        typer.echo(f"{k['kid']}\t{k['alg']}\t{k['state']}\t{k['created_at']}\t{k['retire_at']}")


@jwt_app.command("retire")
def jwt_retire(kid: str) -> None:
    """Stop verifying a key now (e.g. it leaked); tokens it signed get 401."""
    from polymodal.cli import _run, _settings

    settings = _settings()

    async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
        await key_ring(settings, sessions).retire(kid)

    _run(settings, work)
    typer.echo(f"retired {kid}")


def user_password(
    email: Annotated[str, typer.Option(help="The user's email.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set a user's password (prompted, or one line of stdin)."""
    from polymodal.cli import _run, _settings

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    settings = _settings()

    async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
        identity = build_identity(settings, sessions, MemoryCache())
        try:
            await identity.grants.set_password(email=email, password=password)
        finally:
            await identity.close()

    _run(settings, work)
    typer.echo(f"password set for {email.lower()}")


def user_status(
    email: Annotated[str, typer.Option(help="The user's email.")],
    status: Annotated[str, typer.Argument(help=", ".join(USER_STATUSES))],
) -> None:
    """Enable, disable, lock or delete a user in every tenant (tokens stop working)."""
    from polymodal.cli import _run, _settings

    settings = _settings()

    async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
        identity = build_identity(settings, sessions, MemoryCache())
        try:
            await identity.grants.set_user_status(email=email, status=status)
        finally:
            await identity.close()

    _run(settings, work)
    typer.echo(f"{email.lower()} is {status}")
