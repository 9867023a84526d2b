"""The uvicorn runner of the fake providers (see :mod:`polymodal.testing.fake_provider`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette

from polymodal.testing.fakes.anthropic import AnthropicApp
from polymodal.testing.fakes.base import WireApp
from polymodal.testing.fakes.cohere import CohereApp
from polymodal.testing.fakes.control import control_routes
from polymodal.testing.fakes.core import WIRES, FakeState, Faults, Reply, Wire
from polymodal.testing.fakes.gemini import GeminiApp
from polymodal.testing.fakes.openai import OpenAIApp

APPS: dict[str, type[WireApp]] = {
    "openai": OpenAIApp,
    "anthropic": AnthropicApp,
    "gemini": GeminiApp,
    "cohere": CohereApp,
}


def base_url_for(wire: str, host: str, port: int) -> str:
    """The base URL a provider adapter is configured with for this wire."""
    origin = f"http://{host}:{port}"
    return origin + "/v1" if wire == "openai" else origin


def create_app(
    wire: Wire = "openai",
    api_key: str | None = "sk-fake",
    *,
    models: Sequence[str] | None = None,
    embedding_dim: int | None = None,
    record_limit: int = 1000,
) -> Starlette:
    """The ASGI app of one fake provider; its :class:`FakeState` is ``app.state.fake``."""
    if wire not in APPS:
        raise ValueError(f"unknown wire {wire!r}; expected one of {', '.join(WIRES)}")
    cls = APPS[wire]
    state = FakeState(
        wire,
        api_key,
        models=cls.default_models if models is None else models,
        embedding_dim=embedding_dim,
        record_limit=record_limit,
    )
    wire_app = cls(state)
    app = Starlette(routes=[*control_routes(state), *wire_app.routes(), wire_app.catch_all()])
    app.state.fake = state
    return app


class _QuietIncompleteResponses(logging.Filter):
    """Drop uvicorn's complaint about responses the fakes leave unfinished on purpose
    (truncated streams, hung requests released at shutdown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("ASGI callable returned without")


QUIET_INCOMPLETE_RESPONSES = _QuietIncompleteResponses()


class FakeServer(uvicorn.Server):
    """uvicorn's server, reporting when it listens (``ready`` / ``on_ready``)."""

    def __init__(
        self, config: uvicorn.Config, on_ready: Callable[[], object] | None = None
    ) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
            if self.started and self._on_ready is not None:
                self._on_ready()
        finally:
            self.ready.set()

    def run_in_thread(self, sock: socket.socket) -> None:
        try:
            self.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from a failed startup included
            self.error = exc
        finally:
            self.ready.set()


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); uvicorn makes it listen."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def server_config(app: Starlette, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "log_config": None,
        "log_level": None,
        "access_log": False,
        "lifespan": "off",
        "timeout_graceful_shutdown": 2,
        "backlog": 4096,
        **overrides,
    }
    config = uvicorn.Config(app, **options)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if QUIET_INCOMPLETE_RESPONSES not in uvicorn_error.filters:
        uvicorn_error.addFilter(QUIET_INCOMPLETE_RESPONSES)
    return config


class FakeProvider:
    """A fake provider served by uvicorn in a background thread.

    Use as a context manager (``with`` or ``async with``) or call
    :meth:`start` / :meth:`stop`. ``api_key=None`` disables auth.
    """

    def __init__(
        self,
        wire: Wire = "openai",
        api_key: str | None = "sk-fake",
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        models: Sequence[str] | None = None,
        embedding_dim: int | None = None,
        record_limit: int = 1000,
    ) -> None:
        self.wire = wire
        self.api_key = api_key
        self.host = host
        self.app = create_app(
            wire, api_key, models=models, embedding_dim=embedding_dim, record_limit=record_limit
        )
        self.state: FakeState = self.app.state.fake
        self._requested_port = port
        self._port: int | None = None
        self._server: FakeServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        sock = bind_socket(self.host, self._requested_port)
        self._port = sock.getsockname()[1]
        self.state.closing = asyncio.Event()
        server = FakeServer(server_config(self.app))
        thread = threading.Thread(
            target=server.run_in_thread,
            args=(sock,),
            name=f"fake-{self.wire}-{self._port}",
            daemon=True,
        )
        thread.start()
        if not server.ready.wait(15) or server.error is not None or not server.started:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise RuntimeError(f"fake {self.wire} provider failed to start: {server.error!r}")
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        loop = server.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.state.closing.set)
        server.should_exit = True
        thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # addresses ------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake provider is not started")
        return self._port

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (control endpoints live under ``/_fake``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an adapter is configured with (``.../v1`` for openai, the origin otherwise)."""
        return base_url_for(self.wire, self.host, self.port)

    # run-time controls ------------------------------------------------------

    def set_faults(self, faults: Faults | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Replace the faults, e.g. ``set_faults(status=429, retry_after=2, times=1)``."""
        if isinstance(faults, Faults):
            if kwargs:
                raise TypeError("pass either a Faults object or keyword faults")
            new = faults
            new.validate()
        else:
            new = Faults.from_dict({**(faults or {}), **kwargs})
        self.state.set_faults(new)

    def clear_faults(self) -> None:
        self.state.set_faults(Faults())

    @property
    def faults(self) -> Faults:
        return self.state.faults

    def push_replies(self, *replies: Reply | str | Mapping[str, Any]) -> None:
        """Queue scripted replies; each chat request consumes one."""
        self.state.push_replies([Reply.from_obj(r) for r in replies])

    def set_default_reply(self, reply: Reply | str | Mapping[str, Any] | None) -> None:
        """The reply used when the queue is empty (``None``: echo the last user message)."""
        self.state.default_reply = None if reply is None else Reply.from_obj(reply)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded API requests, oldest first (credentials removed)."""
        return self.state.recorded()

    def clear_requests(self) -> None:
        self.state.clear_recorded()

    def reset(self) -> None:
        """Clear faults, scripted replies and recorded requests."""
        self.state.reset()


class RefusedPort:
    """A loopback port bound but not listening: connecting to it is refused.

    The port stays reserved (no other server can take it) until :meth:`close`.
    """

    def __init__(self, wire: Wire = "openai", host: str = "127.0.0.1") -> None:
        self.wire = wire
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]

    @property
    def base_url(self) -> str:
        return base_url_for(self.wire, self.host, self.port)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
