"""Signing-key rotation: the old kid verifies until it is retired; the JWKS lists current
and previous keys; another replica's new key is picked up; start-up rotates an old key;
the operator commands."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from polymodal.cli import app as cli
from polymodal.tenancy.identity_factory import key_ring
from polymodal.tenancy.signing import KeyRing
from tests.conftest import TEST_SECRET, make_settings
from tests.tenancy.conftest import IdEnv


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _jwks_kids(ident: IdEnv) -> list[str]:
    with ident.client() as c:
        return [k["kid"] for k in c.get("/.well-known/jwks.json").json()["keys"]]


def _me_status(ident: IdEnv, token: str) -> int:
    with ident.client(token) as c:
        return c.get("/v1/me").status_code


def test_old_kid_verifies_until_retired(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    email = t.members["member"].email
    ring = ident.server.state.identity.ring
    old_token = ident.token(email)
    old_kid = _kid(old_token)

    new_kid = ident.server.call(ring.rotate()).kid
    assert new_kid != old_kid
    assert _jwks_kids(ident)[:2] == [new_kid, old_kid]  # newest first, previous kept
    new_token = ident.token(email)
    assert _kid(new_token) == new_kid
    assert _me_status(ident, old_token) == 200  # still within the overlap
    assert _me_status(ident, new_token) == 200

    ident.server.call(ring.retire(old_kid))
    assert old_kid not in _jwks_kids(ident)
    with ident.client(old_token) as c:
        refused = c.get("/v1/me")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unknown_key"
    assert _me_status(ident, new_token) == 200


def test_a_key_rotated_by_another_replica_is_picked_up(ident: IdEnv) -> None:
    t = ident.tenant(["member"])
    state = ident.server.state
    token = ident.token(t.members["member"].email)
    claims = jwt.decode(token, options={"verify_signature": False})
    other = key_ring(state.settings, state.sessions)  # a second process's ring
    key = ident.server.call(other.rotate())
    signed_elsewhere = jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})
    assert _me_status(ident, signed_elsewhere) == 200  # unknown kid -> reload -> found
    assert key.kid in _jwks_kids(ident)


async def test_start_up_rotates_a_key_past_its_age(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime.now(UTC)

    def ring(at: datetime) -> KeyRing:
        return KeyRing(
            sessions,
            secret=TEST_SECRET,
            algorithm="EdDSA",
            rotation_s=3600,
            overlap_s=60,
            clock=lambda: at,
        )

    first = await ring(now).ensure()
    assert (await ring(now + timedelta(minutes=5)).ensure()).kid == first.kid
    later = ring(now + timedelta(hours=2))
    second = await later.ensure()
    assert second.kid != first.kid
    assert first.kid in [k["kid"] for k in (await later.jwks())["keys"]]  # overlap
    past_overlap = ring(now + timedelta(hours=2, minutes=2))
    await past_overlap.load()
    assert first.kid not in [k["kid"] for k in (await past_overlap.jwks())["keys"]]
    assert await past_overlap.verification_key(first.kid) is None


async def test_private_keys_are_sealed_at_rest(sessions: async_sessionmaker[AsyncSession]) -> None:
    from sqlalchemy import select

    from polymodal.db.models_identity import SigningKey

    ring = KeyRing(sessions, secret=TEST_SECRET, algorithm="RS256", rotation_s=3600, overlap_s=60)
    key = await ring.rotate()
    async with sessions() as session:
        row = (
            await session.execute(select(SigningKey).where(SigningKey.kid == key.kid))
        ).scalar_one()
    assert "PRIVATE KEY" not in row.private_key and "d" not in row.public_jwk
    wrong = KeyRing(sessions, secret="x" * 40, algorithm="RS256", rotation_s=3600, overlap_s=60)
    await wrong.load()  # another secret cannot unseal it: skipped, not fatal
    assert await wrong.verification_key(key.kid) is None
    await ring.retire(key.kid)  # leave the shared ring clean for other tests


def test_operator_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("POLYMODAL_") and not var.startswith("POLYMODAL_TEST_"):
            monkeypatch.delenv(var)
    settings = make_settings()
    monkeypatch.setenv("POLYMODAL_SECRET_KEY", settings.secret_key.get_secret_value())
    monkeypatch.setenv("POLYMODAL_ENVIRONMENT", "test")
    monkeypatch.setenv("POLYMODAL_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("POLYMODAL_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def ok(args: list[str], stdin: str | None = None) -> str:
        result = runner.invoke(cli, args, input=stdin)
        assert result.exit_code == 0, result.output
        return result.stdout

    ok(["migrate"])
    first = ok(["admin", "jwt", "rotate"]).split()[-1]
    second = ok(["admin", "jwt", "rotate"]).split()[-1]
    listing = ok(["admin", "jwt", "list"])
    assert f"{second}\tEdDSA\tsigning" in listing and f"{first}\tEdDSA\tverifying" in listing
    ok(["admin", "jwt", "retire", first])
    assert first not in ok(["admin", "jwt", "list"])

    ok(["admin", "tenant", "create", "acme"])
    ok(
        [
            "admin",
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "ada@acme.test",
            "--role",
            "owner",
        ]
    )
    ok(
        ["admin", "user", "password", "--email", "ada@acme.test", "--password-stdin"],
        "a long passphrase\n",
    )
    assert "is locked" in ok(["admin", "user", "status", "--email", "ada@acme.test", "locked"])
    bad = runner.invoke(cli, ["admin", "user", "status", "--email", "ada@acme.test", "gone"])
    assert bad.exit_code != 0 and "status" in bad.output
