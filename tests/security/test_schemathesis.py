"""Property-based API tests from the OpenAPI document (schemathesis), over real HTTP.

With a valid key: no 5xx, every status documented, every response body and content type
as documented. Half the cases (chosen by a checksum of the case, so the same every run)
address real objects of the caller's tenant instead of generated ids, so bodies and
queries reach the code behind the 404. Bounded for CI: few examples per operation,
derandomized (the same requests every run), no example database.
"""

from __future__ import annotations

import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from polymodal.app import create_app
from tests.conftest import make_settings
from tests.isolation.conftest import IsoEnv
from tests.isolation.test_bola import Ids, make_objects

MAX_EXAMPLES = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# The document is built from the code (no server, no database): the same one the live
# server below serves (test_served_document_is_the_tested_one checks that).
DOCUMENT = create_app(make_settings()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(
    path_regex=r"^/(metrics|docs|redoc)"  # Prometheus text and HTML pages, not JSON APIs
)
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")


@pytest.fixture(scope="module")
def real_ids(sec: IsoEnv) -> Ids:
    return make_objects(sec)


def test_served_document_is_the_tested_one(sec: IsoEnv) -> None:
    assert sec.server.app.openapi() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, sec: IsoEnv, real_ids: Ids) -> None:
    if case.path_parameters and zlib.crc32(repr((case.query, case.body)).encode()) % 2:
        for name in case.path_parameters:
            if name in real_ids:
                case.path_parameters[name] = real_ids[name]
    case.call_and_validate(
        base_url=sec.server.base_url,
        headers={"Authorization": f"Bearer {sec.a.owner_key}"},
        checks=CHECKS,
        timeout=30,
    )
