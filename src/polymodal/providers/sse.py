"""Server-sent events over a streaming upstream response, with stream deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from polymodal.domain.errors import Timeout
from polymodal.providers.http import StreamResponse


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: str


async def events(
    response: StreamResponse, *, provider: str, first_s: float, idle_s: float
) -> AsyncIterator[Event]:
    """Yield each event (``event:`` name, default "message", and joined ``data:`` lines).

    The first event must arrive within ``first_s`` of the headers and each later read
    within ``idle_s`` of the one before; otherwise `Timeout` (a hung or stalled stream).
    """
    batches = response.lines()
    name = "message"
    data: list[str] = []
    limit = first_s
    while True:
        try:
            async with asyncio.timeout(limit):
                batch = await anext(batches)
        except StopAsyncIteration:
            break
        except TimeoutError as e:
            what = "first chunk" if limit is first_s else "next chunk"
            raise Timeout(f"{provider}: no {what} within {limit:g}s", provider=provider) from e
        for line in batch:
            if not line:
                if data:
                    yield Event(name, "\n".join(data))
                    limit = idle_s
                name, data = "message", []
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
    if data:
        yield Event(name, "\n".join(data))
