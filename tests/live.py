"""Run polymodal as a real HTTP server on loopback, in a thread, for real clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import httpx
import uvicorn

from polymodal.api.state import AppState
from polymodal.app import create_app
from polymodal.rag.jobs import InProcessRunner
from polymodal.settings import Settings
from tests.support import free_port

T = TypeVar("T")


class LiveServer:
    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.app = create_app(settings, environ=environ)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._server.serve())

    def __enter__(self) -> LiveServer:
        self._thread.start()
        # uvicorn reports readiness only as a flag; wait for it (bounded).
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("polymodal test server did not start")
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.polymodal
        return state

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop (e.g. flush the usage recorder)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def client(
        self,
        key: str | None,
        *,
        path: str = "",
        timeout: float = 30,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Client:
        """An HTTP client for `base_url + path`, with `key` as its bearer token if given."""
        sent = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            base_url=self.base_url + path, headers={**sent, **(headers or {})}, timeout=timeout
        )

    def drain_ingestion(self) -> None:
        """Run the in-process ingestion queue until it is empty."""
        knowledge = self.state.knowledge
        assert knowledge is not None and isinstance(knowledge.queue, InProcessRunner)
        self.call(knowledge.queue.drain())
