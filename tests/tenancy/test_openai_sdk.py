"""The real `openai` SDK with a JWT access token as its api_key, against a live server."""

from __future__ import annotations

import openai
import pytest

from tests.tenancy.conftest import IdEnv


def test_openai_sdk_with_an_access_token(ident: IdEnv) -> None:
    t = ident.tenant(["member", "viewer"])
    token = ident.token(t.members["member"].email)
    client = openai.OpenAI(base_url=ident.base_url + "/v1", api_key=token, max_retries=0)
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.total_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Stream hello"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    vectors = client.embeddings.create(model="fake-embed", input=["tenant", "isolation"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1536

    # A viewer's token authenticates but may not call models; a forged one does not.
    viewer = openai.OpenAI(
        base_url=ident.base_url + "/v1",
        api_key=ident.token(t.members["viewer"].email),
        max_retries=0,
    )
    with pytest.raises(openai.PermissionDeniedError) as denied:
        viewer.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert "models:use" in str(denied.value)
    forged = openai.OpenAI(
        base_url=ident.base_url + "/v1", api_key=token[:-4] + "AAAA", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        forged.models.list()
