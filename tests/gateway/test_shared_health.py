"""Two server processes sharing Redis agree on an open breaker within a second."""

from __future__ import annotations

import time

import pytest

from tests.gateway.conftest import ENVIRON, Stack, stack_settings
from tests.gateway.test_failover import chat, route
from tests.live import LiveServer


def test_an_open_breaker_reaches_the_other_server(
    stack: Stack, redis_url: str, redis_prefix: str
) -> None:
    settings = stack_settings(
        stack.tmp, stack.fakes, stack.refused, redis_url=redis_url, redis_key_prefix=redis_prefix
    )
    stack.reset()
    with LiveServer(settings, ENVIRON) as a, LiveServer(settings, ENVIRON) as b:
        client_a, client_b = stack.client(a), stack.client(b)
        stack.fakes["primary"].set_faults(status=503)
        for _ in range(3):  # opens the breaker on server A
            assert route(chat(client_a).headers)["deployment"] == "backup"
        opened = time.monotonic()
        assert a.state.health.snapshot("primary")["breaker"] == "open"

        # Server B never called the primary, yet learns of the open breaker.
        while b.state.health.snapshot("primary")["breaker"] != "open":
            assert time.monotonic() - opened < 1.0, "server B did not learn within 1 s"
            time.sleep(0.01)
        before = len(stack.fakes["primary"].requests)
        r = chat(client_b)
        assert route(r.headers)["attempts"] == "1"
        assert len(stack.fakes["primary"].requests) == before


def test_a_new_server_starts_with_the_shared_state(
    stack: Stack, redis_url: str, redis_prefix: str
) -> None:
    settings = stack_settings(
        stack.tmp, stack.fakes, stack.refused, redis_url=redis_url, redis_key_prefix=redis_prefix
    )
    stack.reset()
    with LiveServer(settings, ENVIRON) as a:
        stack.fakes["primary"].set_faults(status=429, retry_after=30, times=1)
        assert route(chat(stack.client(a)).headers)["deployment"] == "backup"
        # Published asynchronously: wait until Redis holds it (bounded).
        deadline = time.monotonic() + 1.0
        with LiveServer(settings, ENVIRON) as late:
            while late.state.health.snapshot("primary")["cooldown_for_s"] == 0.0:
                if time.monotonic() > deadline:
                    pytest.fail("a server started later did not load the cooldown")
                time.sleep(0.01)
            assert route(chat(stack.client(late)).headers)["deployment"] == "backup"
