"""The operator CLI: migrate, bootstrap, tenants, users and keys, doctor."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.tenancy.keys import parse_key

runner = CliRunner()


def _secret_part(key: str) -> str:
    parts = parse_key(key)
    assert parts is not None
    return parts.secret


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in list(__import__("os").environ):
        if var.startswith("POLYMODAL_") and not var.startswith("POLYMODAL_TEST_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("POLYMODAL_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("POLYMODAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POLYMODAL_STORAGE_URL", f"file://{tmp_path}/objects")
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    return tmp_path


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_bootstrap_creates_demo_once_and_keeps_the_key(env: Path) -> None:
    out = _ok(["admin", "bootstrap"])
    key_file = env / "data" / "demo-key.txt"
    secret = key_file.read_text().strip()
    assert secret in out and secret.startswith("pm_")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    again = _ok(["admin", "bootstrap"])
    assert "nothing to bootstrap" in again
    assert key_file.read_text().strip() == secret
    assert _ok(["admin", "tenant", "list"]).count("\tdemo\t") == 1


def test_tenant_user_key_lifecycle(env: Path) -> None:
    _ok(["admin", "tenant", "create", "acme", "--plan", "pro"])
    assert "\tacme\tpro\t" in _ok(["admin", "tenant", "list"])
    _ok(
        [
            "admin",
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "Ada@Acme.test",
            "--role",
            "admin",
        ]
    )
    secret = _ok(
        [
            "admin",
            "key",
            "create",
            "--tenant",
            "acme",
            "--email",
            "ada@acme.test",
            "--name",
            "ci",
            "--scope",
            "chat",
        ]
    ).strip()
    assert secret.startswith("pm_")

    listing = _ok(["admin", "key", "list", "--tenant", "acme"])
    assert secret not in listing and _secret_part(secret) not in listing
    key_id = listing.split("\t")[0]
    assert "\tactive\t" in listing

    _ok(["admin", "key", "revoke", key_id, "--tenant", "acme"])
    assert "\trevoked\t" in _ok(["admin", "key", "list", "--tenant", "acme"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["admin", "tenant", "create", "x", "--plan", "gold"], "plan must be one of"),
        (
            ["admin", "user", "create", "--tenant", "nope", "--email", "a@b.c", "--role", "owner"],
            "no tenant 'nope'",
        ),
        (["admin", "key", "list", "--tenant", "nope"], "no tenant 'nope'"),
    ],
)
def test_bad_admin_input_is_a_clear_error(env: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_duplicates_are_refused(env: Path) -> None:
    _ok(["admin", "tenant", "create", "dup"])
    result = runner.invoke(app, ["admin", "tenant", "create", "dup"])
    assert result.exit_code == 1 and "already exists" in result.stderr
    _ok(["admin", "user", "create", "--tenant", "dup", "--email", "a@dup.test", "--role", "viewer"])
    result = runner.invoke(
        app,
        ["admin", "user", "create", "--tenant", "dup", "--email", "a@dup.test", "--role", "owner"],
    )
    assert result.exit_code == 1 and "already a member" in result.stderr
    result = runner.invoke(
        app,
        ["admin", "user", "create", "--tenant", "dup", "--email", "b@dup.test", "--role", "god"],
    )
    assert result.exit_code == 1 and "role must be one of" in result.stderr


def test_doctor_reports_the_embedded_profile(env: Path) -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "sqlite" in result.stdout and "schema up to date" in result.stdout
    assert "in-process" in result.stdout


def test_doctor_fails_when_a_part_is_unreachable(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import free_port

    monkeypatch.setenv("POLYMODAL_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("POLYMODAL_REDIS_TIMEOUT_S", "0.5")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "[FAIL] cache" in result.stdout


def test_index_optimize_builds_the_embedded_index_and_refuses_a_held_folder(env: Path) -> None:
    import asyncio
    import uuid

    from polymodal.rag.bm25 import Bm25
    from polymodal.rag.edge_index import EdgeIndex
    from polymodal.rag.index import ChunkPoint

    assert "no collections yet" in _ok(["admin", "index-optimize"])
    index = EdgeIndex(path=env / "data" / "qdrant-edge")
    t, kb = uuid.uuid4(), uuid.uuid4()
    points = [
        ChunkPoint(t, kb, uuid.uuid4(), 0, [1.0, float(i)], Bm25().document(f"w{i}"), {})
        for i in range(50)
    ]
    asyncio.run(index.upsert("kb_x_2", 2, points))
    held = runner.invoke(app, ["admin", "index-optimize"])  # the open index holds the folder
    assert held.exit_code == 1 and "is `polymodal serve` running?" in held.output
    index.close()
    assert "kb_x_2\t50 points" in _ok(["admin", "index-optimize"])
