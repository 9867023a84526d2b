"""The request steps every HTTP adapter shares: send, map failures, parse the 200 body."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from polymodal.domain.errors import ProviderError
from polymodal.providers import errors
from polymodal.providers.base import Deadlines
from polymodal.providers.http import StreamResponse, Upstream, UpstreamError

ErrorMapper = Callable[[int, bytes, Mapping[str, str]], ProviderError]


async def post_json(
    http: Upstream,
    url: str,
    payload: Any,
    headers: Mapping[str, str],
    deadlines: Deadlines,
    *,
    wire: str,
    on_error: ErrorMapper,
    what: str,
) -> Any:
    """POST ``payload`` as JSON and return the parsed 200 body. Transport failures, error
    statuses (through the wire's ``on_error``) and unparsable bodies become domain errors."""
    try:
        response = await http.post(
            url,
            orjson.dumps(payload),
            headers,
            connect_s=deadlines.connect_s,
            total_s=deadlines.total_s,
        )
    except UpstreamError as e:
        raise errors.from_transport(e, provider=wire) from e
    if response.status != 200:
        raise on_error(response.status, response.body, response.headers)
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError as e:
        raise errors.malformed(wire, what) from e


async def check_stream(response: StreamResponse, on_error: ErrorMapper) -> None:
    """A stream that did not open with 200 ends here, as the wire's error."""
    if response.status != 200:
        body = await response.read()
        raise on_error(response.status, body, response.headers)
