"""Database refusals that are the caller's fault, answered as a 400 instead of a 500.

PostgreSQL cannot store a NUL character (``\\u0000``) in text, and says so only when the
row is written; pydantic accepts it in any string. Rather than forbid it field by field,
the refusal is mapped here, once: the transaction has rolled back, so nothing is
half-written. Any other database error stays a 500.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from sqlalchemy.exc import DBAPIError

from polymodal.api.errors import error_body
from polymodal.api.responses import JSONResponse

# character_not_in_repertoire (NUL in text), untranslatable_character
CALLER_TEXT_ERRORS = frozenset({"22021", "22P05"})


async def _dbapi_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if getattr(exc.orig, "sqlstate", None) not in CALLER_TEXT_ERRORS:
        raise exc  # a real fault: the request middleware logs it and answers 500
    return JSONResponse(
        error_body(
            "invalid_request_error",
            "A text value contains a character that cannot be stored (such as NUL, "
            "\\u0000); remove it and send the request again.",
            "invalid_character",
        ),
        status_code=400,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(DBAPIError, _dbapi_error)
