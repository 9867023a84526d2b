"""Annotated dependencies shared by routers."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from polymodal.api.state import AppState
from polymodal.domain.principal import Principal


def state_of(request: Request) -> AppState:
    return cast(AppState, request.app.state.polymodal)


async def app_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool.
    return state_of(request)


State = Annotated[AppState, Depends(app_state)]


async def current_principal(request: Request, state: State) -> Principal:
    return await authenticate(request, state)


async def authenticate(request: Request, state: AppState) -> Principal:
    """The caller of ``request`` (dependency-free, for the hot-path endpoints)."""
    principal = await state.authenticator.authenticate(request.headers.get("authorization"))
    # Read back by the request middleware for logs; never the key itself.
    request.scope.setdefault("state", {})["tenant_id"] = str(principal.tenant_id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
