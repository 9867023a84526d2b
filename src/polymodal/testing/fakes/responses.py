"""Responses with behaviour: JSON (optionally malformed), hung, and fault-injecting streams."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from polymodal.testing.fakes.core import Faults, dumps


def json_response(
    body: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    faults: Faults | None = None,
    media_type: str = "application/json",
) -> Response:
    content = dumps(body)
    if faults is not None and faults.malformed == "json" and status == 200:
        content = content[: max(len(content) // 2, 1)]
    return Response(content, status_code=status, headers=headers, media_type=media_type)


async def wait_gone(receive: Receive, closing: asyncio.Event) -> None:
    """Return when the client disconnects or the server is stopping."""

    async def _disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = {asyncio.ensure_future(_disconnected()), asyncio.ensure_future(closing.wait())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class HangResponse(Response):
    """Never answers: holds the request until the client leaves or the server stops."""

    def __init__(self, closing: asyncio.Event) -> None:
        super().__init__()
        self._closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await wait_gone(receive, self._closing)


# A stream frame: head + payload + tail; corrupting it cuts the payload in half.
Frame = tuple[bytes, bytes, bytes]


class StreamResponse(Response):
    """Plays pre-rendered stream frames, applying the streaming faults."""

    def __init__(
        self,
        frames: list[Frame],
        *,
        media_type: str,
        headers: Mapping[str, str],
        faults: Faults | None,
        error_frame: Frame | None,
        closing: asyncio.Event,
    ) -> None:
        super().__init__(headers=headers, media_type=media_type)
        # Streamed with chunked transfer encoding: no content-length.
        self.raw_headers = [h for h in self.raw_headers if h[0] != b"content-length"]
        self._frames = frames
        self._faults = faults
        self._error_frame = error_frame
        self._closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        frames = self._frames
        f = self._faults
        end: Literal["done", "stall", "truncate", "error"] = "done"
        stop_at = len(frames)
        bad_at = -1
        delay = 0.0
        if f is not None:
            cutoffs: tuple[tuple[Literal["stall", "truncate", "error"], int | None], ...] = (
                ("stall", f.stall_after_chunks),
                ("truncate", f.truncate_after_chunks),
                ("error", f.error_after_chunks),
            )
            for mode, n in cutoffs:
                if n is not None and n < stop_at:
                    stop_at, end = n, mode
            if f.malformed == "chunk" and frames:
                bad_at = min(f.malformed_after_chunks, len(frames) - 1)
            delay = f.chunk_delay_ms / 1000
            if f.first_byte_delay_ms:
                await asyncio.sleep(f.first_byte_delay_ms / 1000)
        for i in range(stop_at):
            if delay and i:
                await asyncio.sleep(delay)
            head, payload, tail = frames[i]
            if i == bad_at:
                bad = head + payload[: len(payload) // 2] + tail
                await send({"type": "http.response.body", "body": bad, "more_body": True})
            body = head + payload + tail
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if end == "stall":
            await wait_gone(receive, self._closing)
            return
        if end == "truncate" and f is not None and f.truncate_mode == "abort":
            # Returning with the body incomplete makes the server drop the connection.
            return
        if end == "error" and self._error_frame is not None:
            err = b"".join(self._error_frame)
            await send({"type": "http.response.body", "body": err, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
