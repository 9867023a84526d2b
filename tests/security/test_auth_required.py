"""No endpoint is reachable without credentials unless it is declared public.

Every operation of the served OpenAPI document is called with no credential, a
malformed one and a well-formed but unknown key: all three get 401 with the API's error
body, before any body or parameter is looked at. The public ones answer without one.
"""

from __future__ import annotations

import pytest

from polymodal.api.openapi import BEARER, PUBLIC_PATHS
from tests.isolation.conftest import IsoEnv

PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
BAD_CREDENTIALS = [
    None,
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer pm_aaaaaaaaaaaa_" + "x" * 43,  # well-formed, unknown
    "Bearer not-a-key-or-a-token",
]


def _operations(env: IsoEnv) -> list[tuple[str, str, dict[str, object]]]:
    doc = env.server.app.openapi()
    return [
        (method.upper(), path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _url(path: str) -> str:
    parts = [PLACEHOLDER if p.startswith("{") else p for p in path.split("/")]
    return "/".join(parts)


@pytest.mark.parametrize("authorization", BAD_CREDENTIALS)
def test_every_private_operation_requires_a_credential(
    sec: IsoEnv, authorization: str | None
) -> None:
    wrong = []
    private = [(m, p) for m, p, _ in _operations(sec) if p not in PUBLIC_PATHS]
    assert len(private) > 10
    with sec.client(None) as client:
        for method, path in private:
            headers = {"Authorization": authorization} if authorization else {}
            body = {} if method in ("POST", "PUT", "PATCH") else None
            r = client.request(method, _url(path), json=body, headers=headers)
            if r.status_code != 401 or r.json().get("error", {}).get("type") != (
                "authentication_error"
            ):
                wrong.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
    assert not wrong, f"reachable with Authorization={authorization!r}:\n" + "\n".join(wrong)


def test_the_document_marks_exactly_the_private_operations(sec: IsoEnv) -> None:
    for method, path, op in _operations(sec):
        secured = op.get("security") == [{BEARER: []}]
        assert secured == (path not in PUBLIC_PATHS), f"{method} {path}"


def test_public_paths_answer_without_a_credential(sec: IsoEnv) -> None:
    served = {p for _, p, _ in _operations(sec)}
    with sec.client(None) as client:
        for path in sorted(PUBLIC_PATHS & served):
            if path.startswith("/v1/auth/"):  # POSTs whose credential is in the body
                r = client.post(path, json={})
                assert r.status_code in (400, 401, 422), f"POST {path}: {r.status_code}"
                continue
            r = client.get(path)
            assert r.status_code in (200, 503), f"GET {path}: {r.status_code}"  # readyz may say 503
