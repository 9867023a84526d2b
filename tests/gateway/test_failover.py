"""Failover over real HTTP: every fault on the primary is survived on the backup."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from polymodal.testing import Reply
from tests.gateway.conftest import BACKUP_TEXT, Stack
from tests.live import LiveServer

HELLO = [{"role": "user", "content": "hello there friend"}]


def chat(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(
        "/chat/completions", json={"model": "tier:simple", "messages": HELLO, **body}
    )


def stream_text(
    client: httpx.Client, **body: Any
) -> tuple[str, list[dict[str, Any]], bool, httpx.Headers]:
    """Collect a streamed answer: (text, parsed events, saw [DONE], headers)."""
    payload = {"model": "tier:simple", "messages": HELLO, "stream": True, **body}
    text, events, done = "", [], False
    with client.stream("POST", "/chat/completions", json=payload) as r:
        assert r.status_code == 200, r.read()
        headers = r.headers
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            events.append(event)
            for choice in event.get("choices", []):
                text += choice["delta"].get("content") or ""
    return text, events, done, headers


def route(headers: httpx.Headers) -> dict[str, str]:
    return dict(part.split("=", 1) for part in headers["x-polymodal-route"].split("; "))


def warm_up(client: httpx.Client, n: int = 6, *, stream: bool = False) -> None:
    """Healthy calls, so the primary's adaptive deadlines learn its speed."""
    for _ in range(n):
        if stream:
            assert stream_text(client)[2]
        else:
            assert chat(client).status_code == 200


FAULTS = {
    "429": {"status": 429, "retry_after": 30},
    "500": {"status": 500},
    "503": {"status": 503},
    "malformed_json": {"malformed": "json"},
    "hang": {"hang": True},
    "slow_first_byte": {"first_byte_delay_ms": 2500},
    "bad_chunk": {"malformed": "chunk", "malformed_after_chunks": 0},
}


# Faults that exist only on one kind of upstream call: a body that is not JSON needs a
# whole answer; a bad chunk or a slow first chunk needs a stream.
WHOLE_ONLY = {"malformed_json"}
STREAM_ONLY = {"bad_chunk", "slow_first_byte"}


CASES = [
    (mode, fault)
    for mode in ("stream", "whole")
    for fault in sorted(FAULTS)
    if not (fault in WHOLE_ONLY and mode == "stream")
    and not (fault in STREAM_ONLY and mode == "whole")
]


@pytest.mark.parametrize(("server", "fault"), CASES, indirect=["server"])
def test_fault_on_primary_is_served_by_backup(stack: Stack, server: LiveServer, fault: str) -> None:
    client = stack.client(server)
    warm_up(client)
    stack.fakes["primary"].set_faults(**FAULTS[fault])
    started = time.perf_counter()
    r = chat(client)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == BACKUP_TEXT
    info = route(r.headers)
    assert info["deployment"] == "backup" and info["attempts"] == "2"
    # Hangs and slow first bytes are cut at the adaptive deadline (floor 0.25 s), not at
    # the 3 s ceiling.
    assert elapsed < 1.5


def test_connection_refused_fails_over(stack: Stack, server: LiveServer) -> None:
    r = stack.client(server).post(
        "/chat/completions", json={"model": "dead", "fallbacks": ["backup"], "messages": HELLO}
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == BACKUP_TEXT


def test_anthropic_overloaded_529_fails_over(stack: Stack, server: LiveServer) -> None:
    stack.fakes["claude"].set_faults(status=529)
    r = stack.client(server).post(
        "/chat/completions", json={"model": "claude", "fallbacks": ["backup"], "messages": HELLO}
    )
    assert r.status_code == 200, r.text
    assert route(r.headers)["deployment"] == "backup"


@pytest.mark.parametrize(
    "faults",
    [
        {"stall_after_chunks": 0},
        {"truncate_after_chunks": 0},
        {"first_byte_delay_ms": 2500},
        {"status": 503},
    ],
    ids=["stall-before-first", "truncated-before-first", "slow-first-byte", "503"],
)
def test_stream_fails_over_before_the_first_byte(
    stack: Stack, server: LiveServer, faults: dict[str, Any]
) -> None:
    client = stack.client(server)
    warm_up(client, stream=True)
    stack.fakes["primary"].set_faults(**faults)
    text, _, done, headers = stream_text(client)
    assert text == BACKUP_TEXT and done
    assert route(headers)["deployment"] == "backup"


@pytest.mark.parametrize(
    "faults",
    [
        {"truncate_after_chunks": 3},
        {"stall_after_chunks": 3},
        {"malformed": "chunk", "malformed_after_chunks": 3},
        {"error_after_chunks": 3},
    ],
    ids=["truncated", "stalled", "bad-chunk", "error-event"],
)
def test_stream_broken_after_first_token_continues_as_one_answer(
    stack: Stack, server: LiveServer, faults: dict[str, Any]
) -> None:
    client = stack.client(server)
    stack.fakes["primary"].push_replies(Reply(text="one two three four five six seven"))
    stack.fakes["backup"].push_replies(Reply(text=" five six seven"))
    stack.fakes["primary"].set_faults(**faults)
    text, events, done, _ = stream_text(client, stream_options={"include_usage": True})
    assert done, "a continued stream ends cleanly"
    assert not any("error" in e for e in events)
    # The client saw the primary's partial words, then the backup's continuation.
    assert text.startswith("one") and text.endswith(" five six seven")
    assert len({e["id"] for e in events}) == 1, "one stream id from start to end"
    # The backup was given the partial answer as context.
    sent = stack.fakes["backup"].requests[-1]["body"]["messages"]
    assert sent[-2]["role"] == "assistant" and sent[-2]["content"].startswith("one")
    assert "Continue" in sent[-1]["content"]


def test_stream_broken_without_continuation_ends_with_an_error_event(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.gateway.conftest import ENVIRON, stack_settings

    settings = stack_settings(stack.tmp, stack.fakes, stack.refused, stream_continuation=False)
    stack.reset()
    with LiveServer(settings, ENVIRON) as server:
        stack.fakes["primary"].set_faults(truncate_after_chunks=3)
        text, events, done, _ = stream_text(stack.client(server))
    assert not done
    assert events[-1]["error"]["code"] == "truncated"
    assert text  # the partial text was delivered before the error


def test_breaker_opens_and_the_dead_deployment_is_skipped(stack: Stack, server: LiveServer) -> None:
    client = stack.client(server)
    stack.fakes["primary"].set_faults(status=503)
    for _ in range(3):  # breaker_consecutive_failures
        assert chat(client).status_code == 200
    before = len(stack.fakes["primary"].requests)
    r = chat(client)
    assert r.status_code == 200
    info = route(r.headers)
    assert info["attempts"] == "1" and info["deployment"] == "backup"
    assert float(info["failover_ms"]) == 0.0
    assert len(stack.fakes["primary"].requests) == before
    health = {d["deployment"]: d for d in client.get("/routing/health").json()["data"]}
    assert health["primary"]["breaker"] == "open"
    assert health["backup"]["breaker"] == "closed"


def test_rate_limit_cools_the_deployment_down(stack: Stack, server: LiveServer) -> None:
    client = stack.client(server)
    stack.fakes["primary"].set_faults(status=429, retry_after=30, times=1)
    assert route(chat(client).headers)["deployment"] == "backup"
    # The primary is healthy again, but in cooldown for 30 s: not tried.
    before = len(stack.fakes["primary"].requests)
    assert route(chat(client).headers)["deployment"] == "backup"
    assert len(stack.fakes["primary"].requests) == before
    health = {d["deployment"]: d for d in client.get("/routing/health").json()["data"]}
    assert 25 < health["primary"]["cooldown_for_s"] <= 30


def test_all_down_is_a_fast_503_with_retry_after(stack: Stack, server: LiveServer) -> None:
    client = stack.client(server)
    for name in ("primary", "backup", "third"):
        stack.fakes[name].set_faults(status=503)
    for _ in range(3):
        chat(client)
    started = time.perf_counter()
    r = chat(client)
    elapsed = time.perf_counter() - started
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "all_candidates_down"
    assert 1 <= int(r.headers["retry-after"]) <= 10
    assert elapsed < 0.2


def test_retry_budget_caps_upstream_attempts(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.gateway.conftest import ENVIRON, stack_settings

    # Breakers that never open, so only the retry budget limits the storm.
    settings = stack_settings(
        stack.tmp,
        stack.fakes,
        stack.refused,
        breaker_consecutive_failures=10_000,
        breaker_min_calls=10_000,
        retry_budget_ratio=0.2,
        retry_budget_floor_per_s=0.0,
    )
    stack.reset()
    for name in ("primary", "backup", "third"):
        stack.fakes[name].set_faults(status=503)
    with LiveServer(settings, ENVIRON) as server:
        client = stack.client(server)
        n = 40
        statuses = [chat(client).status_code for _ in range(n)]
    assert set(statuses) == {503}
    upstream = sum(len(stack.fakes[name].requests) for name in ("primary", "backup", "third"))
    # Without a budget: 3 attempts each = 120. With it: n first attempts plus at most
    # ratio * n retries plus the initial allowance.
    assert upstream <= n + 0.2 * n + 2, upstream
    assert upstream >= n


def test_hedging_takes_the_faster_answer(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.gateway.conftest import ENVIRON, stack_settings

    settings = stack_settings(
        stack.tmp,
        stack.fakes,
        stack.refused,
        routes={
            "simple": ["primary", "backup"],
            "complex": ["primary"],
            "critical": ["primary"],
            "hedge_ms": {"simple": 100},
        },
    )
    stack.reset()
    stack.fakes["primary"].set_faults(first_byte_delay_ms=1500)
    with LiveServer(settings, ENVIRON) as server:
        started = time.perf_counter()
        text, _, done, headers = stream_text(stack.client(server))
        elapsed = time.perf_counter() - started
    assert text == BACKUP_TEXT and done
    assert elapsed < 1.0
    assert route(headers)["deployment"] == "backup"
