"""The API skeleton: JSON errors for everything, request ids, metrics, body limit, logs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.app import create_app
from polymodal.gateway.service import Gateway
from polymodal.tenancy import admin
from polymodal.tenancy.keys import parse_key
from tests.conftest import DatabaseTarget


def _secret_part(key: str) -> str:
    parts = parse_key(key)
    assert parts is not None
    return parts.secret


class Thing(BaseModel):
    name: str = Field(min_length=1)
    count: int


def _with_probe_routes(app: FastAPI) -> FastAPI:
    """Routes that exist only in this test, to drive the error handlers."""

    @app.post("/probe/things")
    async def make_thing(thing: Thing) -> dict[str, str]:
        return {"name": thing.name}

    @app.get("/probe/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    return app


@pytest.fixture
async def app(migrated_db: DatabaseTarget) -> AsyncIterator[FastAPI]:
    application = _with_probe_routes(
        create_app(migrated_db.settings(max_body_bytes=2048, access_log=True))
    )
    async with LifespanManager(application, startup_timeout=60) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _assert_error_shape(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert {"type", "message", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert "/v1/nothing-here" in _assert_error_shape(r)["message"]


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    r = await client.delete("/healthz")
    assert r.status_code == 405
    assert _assert_error_shape(r)["code"] == "method_not_allowed"


async def test_validation_error_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/probe/things", json={"name": "x"})
    assert r.status_code == 422
    error = _assert_error_shape(r)
    assert error["param"] == "count"
    assert error["message"].startswith("count:")

    r = await client.post("/probe/things", json={"name": "", "count": "many"})
    assert r.status_code == 422
    assert "name" in _assert_error_shape(r)["message"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/probe/things", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert _assert_error_shape(r)["code"] == "invalid_json"


async def test_unhandled_error_is_500_without_a_stack_trace(client: httpx.AsyncClient) -> None:
    r = await client.get("/probe/boom", headers={"x-request-id": "req-boom-1"})
    assert r.status_code == 500
    error = _assert_error_shape(r)
    assert "secret internal detail" not in r.text
    assert "Traceback" not in r.text
    assert "req-boom-1" in error["message"]


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/probe/things", json={"name": "x" * 5000, "count": 1})
    assert r.status_code == 413
    assert _assert_error_shape(r)["code"] == "payload_too_large"


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:  # no content-length: counted as it streams
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'", "count": 1}'

    r = await client.post(
        "/probe/things", content=body(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert _assert_error_shape(r)["code"] == "payload_too_large"


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz")
    generated = r.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    r = await client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/does-not-exist-" + uuid.uuid4().hex)
    await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert 'polymodal_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "does-not-exist" not in text
    assert "polymodal_http_request_duration_seconds_bucket" in text
    assert "process_cpu_seconds_total" in text


async def test_logs_carry_request_and_tenant_ids_but_no_key(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"log-{uuid.uuid4().hex[:8]}"
    tenant = await admin.create_tenant(sessions, name=name, actor="test")
    await admin.add_user(sessions, tenant=name, email=f"o@{name}.test", role="owner", actor="t")
    key = await admin.issue_key(sessions, tenant=name, email=f"o@{name}.test", actor="t")
    capsys.readouterr()
    r = await client.get(
        "/v1/me", headers={"Authorization": f"Bearer {key.secret}", "x-request-id": "log-req-7"}
    )
    assert r.status_code == 200
    out = capsys.readouterr().out
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = [
        e for e in lines if e.get("event") == "request" and e.get("request_id") == "log-req-7"
    ]
    assert access, out
    assert access[0]["tenant_id"] == str(tenant.id)
    assert access[0]["route"] == "/v1/me"
    assert key.secret not in out
    assert _secret_part(key.secret) not in out


async def test_unhandled_error_on_a_hot_route_is_a_logged_json_500(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The OpenAI-compatible endpoints run outside FastAPI's error middleware: the
    request-context layer still answers 500 in the error shape, with the request id."""
    name = f"hot-{uuid.uuid4().hex[:8]}"
    await admin.create_tenant(sessions, name=name, actor="test")
    await admin.add_user(sessions, tenant=name, email=f"o@{name}.test", role="owner", actor="t")
    key = await admin.issue_key(sessions, tenant=name, email=f"o@{name}.test", actor="t")

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Gateway, "chat", broken)
    capsys.readouterr()
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key.secret}", "x-request-id": "req-hot-500"},
    )
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-hot-500"
    error = _assert_error_shape(r)
    assert "req-hot-500" in error["message"] and "secret internal detail" not in r.text
    assert "unhandled error" in capsys.readouterr().out
