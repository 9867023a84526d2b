"""Rate limits through the real API (embedded profile: in-process buckets): OpenAI's
``x-ratelimit-*`` headers on every answer, 429 with ``Retry-After`` past the limit, plan
defaults, tenant and key overrides, and bad input."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.economics.conftest import PLANS, Env, chat_body

RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def test_every_answer_carries_the_rate_limit_headers(env: Env) -> None:
    t = env.tenant("free")
    with env.client(t.key) as c:
        first = c.post("/chat/completions", json=chat_body(max_tokens=20))
        second = c.post("/chat/completions", json=chat_body(max_tokens=20))
        embedded = c.post("/embeddings", json={"model": "fake-embed", "input": "hello"})
    for r in (first, second, embedded):
        assert r.status_code == 200, r.text
        assert all(h in r.headers for h in RATE_HEADERS)
    assert first.headers["x-ratelimit-limit-requests"] == str(PLANS["free"]["requests_per_minute"])
    assert first.headers["x-ratelimit-limit-tokens"] == str(PLANS["free"]["tokens_per_minute"])
    rpm = PLANS["free"]["requests_per_minute"]
    assert int(first.headers["x-ratelimit-remaining-requests"]) == rpm - 1
    assert int(second.headers["x-ratelimit-remaining-requests"]) == rpm - 2
    # Tokens are taken at the estimate (prompt + max_tokens) and the unused part given
    # back after the call: the remaining tokens never drop by more than the estimate.
    tpm = PLANS["free"]["tokens_per_minute"]
    assert tpm - 40 <= int(first.headers["x-ratelimit-remaining-tokens"]) < tpm
    assert first.headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))


def rejections(env: Env, kind: str) -> float:
    text = httpx.get(env.server.base_url + "/metrics").text
    prefix = f'polymodal_rate_limit_rejections_total{{kind="{kind}",plan="free"}}'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def test_past_the_limit_is_429_with_retry_after_and_headers(env: Env) -> None:
    t = env.tenant("free")
    counted = rejections(env, "requests")
    with env.client(t.owner_key) as owner:
        r = owner.put("/limits", json={"requests_per_minute": 3})
        assert r.status_code == 200, r.text
        assert r.json()["effective"]["requests_per_minute"] == 3
    before = len(env.fake.requests)
    with env.client(t.key) as c:
        for _ in range(3):
            assert c.post("/chat/completions", json=chat_body()).status_code == 200
        refused = c.post("/chat/completions", json=chat_body())
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "3 requests per minute" in error["message"]
    # 3 a minute: one request every 20 s, so the next one is about 20 s away.
    assert 15 <= int(refused.headers["retry-after"]) <= 21
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert len(env.fake.requests) == before + 3  # the refused call reached no provider
    assert rejections(env, "requests") == counted + 1


def test_the_openai_sdk_sees_a_rate_limit_error(env: Env) -> None:
    t = env.tenant("free")
    with env.client(t.owner_key) as owner:
        assert owner.put("/limits", json={"requests_per_minute": 1}).status_code == 200
    client = openai.OpenAI(base_url=env.server.base_url + "/v1", api_key=t.key, max_retries=0)
    ok = client.chat.completions.with_raw_response.create(
        model="fake-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
    assert caught.value.response.headers["retry-after"]
    assert caught.value.code == "rate_limit_exceeded"


def test_streams_and_embeddings_count_too(env: Env) -> None:
    t = env.tenant("free")
    with env.client(t.owner_key) as owner:
        assert owner.put("/limits", json={"requests_per_minute": 2}).status_code == 200
    with env.client(t.key) as c:
        body = {**chat_body(), "stream": True}
        with c.stream("POST", "/chat/completions", json=body) as s:
            assert s.status_code == 200
            assert s.headers["x-ratelimit-remaining-requests"] == "1"
            assert "[DONE]" in s.read().decode()
        assert c.post("/embeddings", json={"model": "fake-embed", "input": "x"}).status_code == 200
        assert c.post("/embeddings", json={"model": "fake-embed", "input": "x"}).status_code == 429


def test_tokens_per_minute_bind_on_the_estimate(env: Env) -> None:
    t = env.tenant("free")
    with env.client(t.owner_key) as owner:
        assert owner.put("/limits", json={"tokens_per_minute": 1000}).status_code == 200
    with env.client(t.key) as c:
        # One call may not ask for more than the whole minute's tokens.
        too_large = c.post("/chat/completions", json=chat_body(max_tokens=2000))
        assert too_large.status_code == 429
        assert too_large.json()["error"]["code"] == "request_too_large"
        assert "1000 tokens per minute" in too_large.json()["error"]["message"]
        # Each call takes its estimate (a short prompt + 400); three estimates exceed
        # 1000, but each settlement gives back what the call did not use.
        assert c.post("/chat/completions", json=chat_body(max_tokens=400)).status_code == 200
        env.settle()
        assert c.post("/chat/completions", json=chat_body(max_tokens=400)).status_code == 200
        env.settle()
        third = c.post("/chat/completions", json=chat_body(max_tokens=400))
    assert third.status_code == 200, third.text
    remaining = int(third.headers["x-ratelimit-remaining-tokens"])
    assert remaining < 1000 - 400


def test_plan_defaults_and_a_tenant_override(env: Env) -> None:
    t = env.tenant("pro")
    with env.client(t.owner_key) as owner:
        view = owner.get("/limits").json()
        assert view["plan"] == "pro"
        assert view["plan_defaults"] == {
            "requests_per_minute": PLANS["pro"]["requests_per_minute"],
            "tokens_per_minute": PLANS["pro"]["tokens_per_minute"],
        }
        assert view["overrides"] == {"requests_per_minute": None, "tokens_per_minute": None}
        assert view["effective"] == view["plan_defaults"]

        changed = owner.put("/limits", json={"requests_per_minute": 50}).json()
        assert changed["effective"]["requests_per_minute"] == 50
        assert changed["effective"]["tokens_per_minute"] == PLANS["pro"]["tokens_per_minute"]
        with env.client(t.key) as c:
            r = c.post("/chat/completions", json=chat_body())
            assert r.headers["x-ratelimit-limit-requests"] == "50"

        restored = owner.put("/limits", json={"requests_per_minute": None}).json()
        assert restored["effective"] == restored["plan_defaults"]


def test_a_key_limit_binds_that_key_only(env: Env) -> None:
    t = env.tenant("free")
    with env.client(t.owner_key) as owner:
        r = owner.put(f"/keys/{t.key_id}/limits", json={"requests_per_minute": 1})
        assert r.status_code == 200, r.text
        assert r.json()["effective"]["requests_per_minute"] == 1
    with env.client(t.key) as limited, env.client(t.other_key) as other:
        assert limited.post("/chat/completions", json=chat_body()).status_code == 200
        refused = limited.post("/chat/completions", json=chat_body())
        assert refused.status_code == 429
        assert "this API key" in refused.json()["error"]["message"]
        assert other.post("/chat/completions", json=chat_body()).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"requests_per_minute": 0}, 422, "requests_per_minute"),
        ({"tokens_per_minute": -5}, 422, "tokens_per_minute"),
        ({"plan": "platinum"}, 422, "platinum"),
        ({"plan": "enterprise"}, 403, "plan"),
        ({"requests_per_minute": 10_000}, 422, "requests_per_minute"),
        ({"per_minute": 5}, 422, "per_minute"),
        ({"tokens_per_minute": 2**31}, 422, "tokens_per_minute"),
    ],
)
def test_bad_limits_are_refused_by_name(
    env: Env, body: dict[str, int], status: int, named: str
) -> None:
    t = env.tenant("free")
    with env.client(t.owner_key) as owner:
        r = owner.put("/limits", json=body)
        assert r.status_code == status, r.text
        assert named in r.json()["error"]["message"]
        # Nothing was half-written.
        assert owner.get("/limits").json()["overrides"] == {
            "requests_per_minute": None,
            "tokens_per_minute": None,
        }


def test_members_cannot_change_limits(env: Env) -> None:
    t = env.tenant("free")
    with env.client(t.key) as member:
        assert member.get("/limits").status_code == 200
        r = member.put("/limits", json={"requests_per_minute": 5})
        assert r.status_code == 403
        assert "limits:write" in r.json()["error"]["message"]


def test_the_bucket_refills(env: Env) -> None:
    """Retry-After is honest: at 60 a minute the next request is free a second later."""
    t = env.tenant("free")
    with env.client(t.owner_key) as owner:
        assert owner.put("/limits", json={"requests_per_minute": 1}).status_code == 200
    with env.client(t.key) as c:
        assert c.post("/chat/completions", json=chat_body()).status_code == 200
        refused = c.post("/chat/completions", json=chat_body())
        assert refused.status_code == 429
    with env.client(t.owner_key) as owner:
        # Raising the limit applies at once on this server (the cache is invalidated).
        assert owner.put("/limits", json={"requests_per_minute": 30}).status_code == 200
    with env.client(t.key) as c:
        started = time.monotonic()
        while (r := c.post("/chat/completions", json=chat_body())).status_code == 429:
            assert time.monotonic() - started < 5, "the bucket did not refill"
            time.sleep(float(r.headers["retry-after"]) / 10)
        assert r.status_code == 200
