"""Settings are validated at start-up; a bad one stops with one line that names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from polymodal.settings import SettingsError, load_settings

CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in list(__import__("os").environ):
        if var.startswith("POLYMODAL_") and not var.startswith("POLYMODAL_TEST_"):
            monkeypatch.delenv(var)


def test_defaults_are_the_embedded_profile() -> None:
    s = load_settings()
    assert s.is_sqlite
    assert s.profile() == {
        "database": "sqlite",
        "cache": "in-process",
        "jobs": "in-process",
        "vectors": "qdrant-edge",
        "objects": "file",
    }


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("POLYMODAL_DATABASE_URL", "mysql://db", "POLYMODAL_DATABASE_URL"),
        ("POLYMODAL_REDIS_URL", "http://redis", "POLYMODAL_REDIS_URL"),
        ("POLYMODAL_PORT", "99999", "POLYMODAL_PORT"),
        ("POLYMODAL_AUTH_CACHE_TTL_S", "soon", "POLYMODAL_AUTH_CACHE_TTL_S"),
        ("POLYMODAL_WORKER_COUNT", "2", "POLYMODAL_WORKER_COUNT: unknown setting"),
    ],
)
def test_invalid_env_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_placeholder_secret_is_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLYMODAL_ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match="secret_key"):
        load_settings()
    monkeypatch.setenv("POLYMODAL_SECRET_KEY", "change-me")
    with pytest.raises(SettingsError, match="placeholder"):
        load_settings()
    monkeypatch.setenv("POLYMODAL_SECRET_KEY", "a-real-secret-of-enough-length-0123456789")
    assert load_settings().environment == "production"


def test_yaml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "polymodal.yaml").write_text("port: 9001\nworkers: 3\n")
    assert load_settings().port == 9001
    monkeypatch.setenv("POLYMODAL_PORT", "9002")
    s = load_settings()
    assert (s.port, s.workers) == (9002, 3)


def test_unknown_key_in_yaml_is_named(tmp_path: Path) -> None:
    (tmp_path / "polymodal.yaml").write_text("portt: 9001\n")
    with pytest.raises(SettingsError, match=r"portt in polymodal.yaml: unknown setting"):
        load_settings()


def test_bad_value_in_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "polymodal.yaml").write_text("database_url: oracle://x\n")
    with pytest.raises(SettingsError, match=r"database_url in polymodal.yaml"):
        load_settings()


def test_missing_explicit_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLYMODAL_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()


def test_broken_yaml(tmp_path: Path) -> None:
    (tmp_path / "polymodal.yaml").write_text("port: [1,\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings()


def _polymodal(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polymodal", *args],
        env={**CLEAN_ENV, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_an_invalid_setting_with_one_line(tmp_path: Path) -> None:
    result = _polymodal(["serve"], {"POLYMODAL_DATABASE_URL": "mysql://x"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "POLYMODAL_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_unreachable_database_with_one_line(tmp_path: Path) -> None:
    from tests.support import free_port

    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    result = _polymodal(
        ["serve"],
        {"POLYMODAL_DATABASE_URL": url, "POLYMODAL_DATABASE_CONNECT_TIMEOUT_S": "1"},
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "POLYMODAL_DATABASE_URL: database unreachable" in result.stderr


def test_serve_refuses_a_route_to_a_missing_deployment(tmp_path: Path) -> None:
    (tmp_path / "polymodal.yaml").write_text(
        "routes:\n  simple: [ghost-model]\n"
        "  complex: [local-smollm2]\n  critical: [local-smollm2]\n"
    )
    result = _polymodal(["serve"], {}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "routes.simple: names missing deployment 'ghost-model'" in result.stderr
