"""The operator's side: `polymodal admin tenant limits` changes a tenant's plan and may
set limits above it (tenant admins may only narrow theirs through the API)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polymodal.cli import app

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("POLYMODAL_") and not var.startswith("POLYMODAL_TEST_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("POLYMODAL_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("POLYMODAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POLYMODAL_STORAGE_URL", f"file://{tmp_path}/objects")
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    created = runner.invoke(app, ["admin", "tenant", "create", "acme"])
    assert created.exit_code == 0, created.output
    return tmp_path


def limits(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["admin", "tenant", "limits", "acme", *args])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_the_operator_changes_the_plan_and_goes_above_it(cli_env: Path) -> None:
    assert limits("--plan", "pro") == {
        "plan": "pro",
        "requests_per_minute": None,
        "tokens_per_minute": None,
    }
    # 600 a minute is pro's default; the operator may grant more.
    assert limits("--rpm", "5000")["requests_per_minute"] == 5000
    assert limits("--tpm", "9000000") == {
        "plan": "pro",
        "requests_per_minute": None,  # one call sets both: a dimension left out follows the plan
        "tokens_per_minute": 9000000,
    }
    listed = runner.invoke(app, ["admin", "tenant", "list"])
    assert "acme" in listed.stdout and "pro" in listed.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--plan", "platinum"], "platinum"),
        (["--rpm", "0"], "--rpm"),
        (["--tpm", "-3"], "--tpm"),
    ],
)
def test_bad_operator_input_is_named(cli_env: Path, args: list[str], named: str) -> None:
    result = runner.invoke(app, ["admin", "tenant", "limits", "acme", *args])
    assert result.exit_code != 0
    assert named in result.output


def test_an_unknown_tenant_is_named(cli_env: Path) -> None:
    result = runner.invoke(app, ["admin", "tenant", "limits", "nobody", "--plan", "pro"])
    assert result.exit_code != 0
    assert "nobody" in result.output
