"""Structured logs with structlog: JSON lines carrying request and tenant ids.

Nothing here logs request bodies, prompts or keys; callers bind ids, not payloads.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=str).decode()


class _StdoutLogger:
    """Writes each line to whatever ``sys.stdout`` is at the time (not at start-up)."""

    def __init__(self, *args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        sys.stdout.write(message + "\n")

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure_logging(*, level: str, json: bool) -> None:
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_StdoutLogger,
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (uvicorn, alembic) go to stderr at WARNING and up.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
