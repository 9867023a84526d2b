"""Integers past what the database stores (schemathesis meets them only by chance in a
bounded run): every integer parameter of every operation, sent far out of range with a
valid key, gets a 4xx naming the problem, never a 5xx."""

from __future__ import annotations

from typing import Any

from tests.isolation.conftest import IsoEnv

PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
HUGE = [2**31, 2**63, -(2**63) - 1, 10**30]


def _is_integer(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(o.get("type") == "integer" for o in options)


def test_out_of_range_integers_are_refused_not_crashed(sec: IsoEnv) -> None:
    doc = sec.server.app.openapi()
    probes = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p["in"] in ("query", "path") and _is_integer(p.get("schema", {})):
                    probes.append((method.upper(), path, p))
    assert probes  # the API has integer parameters (limits, offsets, versions)
    crashed = []
    with sec.client(sec.a.owner_key) as c:
        for method, path, param in probes:
            for value in HUGE:
                url = "/".join(
                    str(value)
                    if part == "{" + param["name"] + "}"
                    else PLACEHOLDER
                    if part.startswith("{")
                    else part
                    for part in path.split("/")
                )
                query = {param["name"]: value} if param["in"] == "query" else {}
                body = {} if method in ("POST", "PUT", "PATCH") else None
                r = c.request(method, url, params=query, json=body)
                if r.status_code >= 500:
                    crashed.append(f"{method} {path} {param['name']}={value}: {r.status_code}")
    assert not crashed, "\n".join(crashed)


def test_text_the_database_cannot_store_is_a_400(sec: IsoEnv) -> None:
    """PostgreSQL refuses NUL in text; schemathesis found it as a 500 on key names."""
    with sec.client(sec.a.owner_key) as c:
        r = c.post("/v1/keys", json={"name": "bad\u0000name"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_character"
        names = [k["name"] for k in c.get("/v1/keys").json()["data"]]
    assert not any("bad" in n for n in names)  # nothing half-written
