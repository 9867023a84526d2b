"""Fake model providers: real HTTP servers on loopback, one provider wire each.

``FakeProvider`` runs uvicorn in a background thread on ``127.0.0.1`` (an
ephemeral port by default) serving the app of one wire; point a provider
adapter at ``.base_url``:

=========  ==============================  ==========================================
wire       base_url                        endpoints
=========  ==============================  ==========================================
openai     ``http://127.0.0.1:PORT/v1``    ``/chat/completions``, ``/embeddings``,
                                           ``/models``
anthropic  ``http://127.0.0.1:PORT``       ``/v1/messages``,
                                           ``/v1/messages/count_tokens``, ``/v1/models``
gemini     ``http://127.0.0.1:PORT``       ``/v1beta/models/{m}:generateContent``,
                                           ``:streamGenerateContent[?alt=sse]``,
                                           ``:embedContent``, ``:batchEmbedContents``,
                                           ``:countTokens``, ``/v1beta/models``
cohere     ``http://127.0.0.1:PORT``       ``/v1/embed``, ``/v2/embed``
=========  ==============================  ==========================================

Auth is the provider's (``Authorization: Bearer`` for openai and cohere,
``x-api-key`` plus ``anthropic-version`` for anthropic, ``x-goog-api-key`` or
``?key=`` for gemini) with the provider's real error on a missing or wrong key:
401 everywhere except gemini, which answers 403 ``PERMISSION_DENIED`` (missing)
and 400 ``API_KEY_INVALID`` (wrong) like the real API. ``api_key=None``
accepts anything.

Replies are deterministic: by default ``"echo: <last user message text>"``
streamed one word per chunk, or the next scripted :class:`Reply` (text, tool
calls -- returned only when the request offers tools --, finish reason); the
request's max tokens cut the reply with a ``length`` finish. Tokens are
whitespace-separated words. Embeddings are unit float32 vectors from SHAKE-256
of the text (model dimension, e.g. 1536 for text-embedding-3-small, 1024 for
embed-english-v3.0, 768 for text-embedding-004, else 8; overridable with
``embedding_dim`` or the request's ``dimensions`` / ``outputDimensionality``).

Faults (:class:`Faults`; a stream "chunk" is one SSE event on the wire) are set
at run time, from Python (``set_faults``) or through the unauthenticated control
endpoints on the same server:

- ``GET|POST|DELETE /_fake/faults``: read / replace / clear the faults
  (POST body: a JSON object of fault fields; an empty object clears them).
- ``GET|POST|DELETE /_fake/replies``: POST ``{"replies": [...], "default": {...}|null}``
  appends scripted replies and optionally sets the reply used once the queue is empty.
- ``GET|DELETE /_fake/requests``: recorded API requests ``{"method", "path",
  "query", "headers", "body"}`` with credentials (headers and ``key``) removed.
- ``POST /_fake/reset``: clear faults, replies and recorded requests.
- ``GET /_fake/health``.

CLI: ``python -m polymodal.testing.fake_provider --wire openai --port 9100
[--api-key K | --no-auth] [--workers N]`` serves until killed; with one worker
it prints ``fake <wire> provider ready: base_url=<url>`` once listening
(``--port 0`` picks a free port). With ``--workers`` > 1 each worker process
has its own faults, replies and records.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from polymodal.testing.fakes.core import WIRES, FakeState, Faults, Reply, ToolCall, Wire
from polymodal.testing.fakes.server import (
    APPS,
    QUIET_INCOMPLETE_RESPONSES,
    FakeProvider,
    FakeServer,
    RefusedPort,
    base_url_for,
    bind_socket,
    create_app,
    server_config,
)

__all__ = [
    "WIRES",
    "FakeProvider",
    "FakeState",
    "Faults",
    "RefusedPort",
    "Reply",
    "ToolCall",
    "Wire",
    "app_from_env",
    "base_url_for",
    "create_app",
    "main",
]

# --------------------------------------------------------------------------- CLI

_ENV = "POLYMODAL_FAKE_"


def app_from_env() -> Starlette:
    """App factory for multi-worker serving (configured by ``POLYMODAL_FAKE_*``)."""
    wire = os.environ.get(_ENV + "WIRE", "openai")
    if wire not in APPS:
        raise ValueError(f"unknown wire {wire!r}")
    key = os.environ.get(_ENV + "API_KEY", "sk-fake")
    dim = os.environ.get(_ENV + "EMBEDDING_DIM")
    return create_app(
        wire,  # type: ignore[arg-type]
        key or None,
        embedding_dim=int(dim) if dim else None,
        record_limit=int(os.environ.get(_ENV + "RECORD_LIMIT", "1000")),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m polymodal.testing.fake_provider",
        description="Serve a fake model provider until killed.",
    )
    parser.add_argument("--wire", choices=WIRES, default="openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--api-key", default="sk-fake")
    parser.add_argument("--no-auth", action="store_true", help="accept any or no credential")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--embedding-dim", type=int, default=None)
    parser.add_argument("--record-limit", type=int, default=1000, help="0 disables recording")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    key = None if args.no_auth else args.api_key
    if args.workers <= 1:
        app = create_app(
            args.wire, key, embedding_dim=args.embedding_dim, record_limit=args.record_limit
        )
        sock = bind_socket(args.host, args.port)
        url = base_url_for(args.wire, args.host, sock.getsockname()[1])
        config = server_config(
            app, log_config=uvicorn.config.LOGGING_CONFIG, log_level=args.log_level
        )
        server = FakeServer(
            config,
            on_ready=lambda: print(f"fake {args.wire} provider ready: base_url={url}", flush=True),
        )
        server.run(sockets=[sock])
        return
    logging.getLogger("uvicorn.error").addFilter(QUIET_INCOMPLETE_RESPONSES)
    print(
        f"fake {args.wire} provider starting {args.workers} workers: "
        f"base_url={base_url_for(args.wire, args.host, args.port)}",
        flush=True,
    )
    os.environ[_ENV + "WIRE"] = args.wire
    os.environ[_ENV + "API_KEY"] = key or ""
    os.environ[_ENV + "RECORD_LIMIT"] = str(args.record_limit)
    if args.embedding_dim is not None:
        os.environ[_ENV + "EMBEDDING_DIM"] = str(args.embedding_dim)
    uvicorn.run(
        "polymodal.testing.fake_provider:app_from_env",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
