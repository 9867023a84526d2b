"""The pieces without a server: the sandbox at render time, language negotiation and
detection, search folding, JSON extraction, and the repository on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import templates as repo
from polymodal.db.scope import system_session
from polymodal.templates import jsonout, language, sandbox, search
from polymodal.templates.views import negotiate
from polymodal.tenancy import admin


@pytest.mark.parametrize(
    "source",
    [
        "{{ x.__class__ }}",
        "{{ x.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ x | attr('__class__') }}",
    ],
)
def test_the_sandbox_blocks_unsafe_access_at_render_time(source: str) -> None:
    """The second line of defence: even a source that skipped the save-time check."""
    with pytest.raises(sandbox.TemplateRenderError):
        sandbox.render(source, {"x": "text"})


def test_render_is_strict_about_missing_variables() -> None:
    with pytest.raises(sandbox.TemplateRenderError, match="UndefinedError"):
        sandbox.render("Hello {{ name }}", {})
    assert sandbox.render("Hello {{ name | default('you', true) }}", {"name": None}) == (
        "Hello you"
    )


def test_set_inside_a_branch_counts_as_declared() -> None:
    sandbox.check_source(
        "{% if a %}{% set b = 1 %}{% else %}{% set b = 2 %}{% endif %}{{ b }}", variables=["a"]
    )
    with pytest.raises(sandbox.TemplateSourceError, match="'c'"):
        sandbox.check_source("{{ a }}{{ c }}", variables=["a"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("es-MX,es;q=0.9,en;q=0.8", "es"),
        ("sv;q=1.0, de;q=0.5, fr;q=0.7", "fr"),
        ("zh-Hans-CN", "zh"),
        ("en;q=0, ja", "ja"),
        ("fi, sv", None),
        ("", None),
        (None, None),
        ("de;q=bogus, it", "it"),
    ],
)
def test_accept_language_negotiation(header: str | None, expected: str | None) -> None:
    assert negotiate(header) == expected


def test_language_detection_and_the_prose_it_reads() -> None:
    assert language.detect("Bonjour, nous vous écrivons au sujet de votre commande.").lang == "fr"
    assert language.detect("Acme GmbH").lang is None  # too short to tell
    assert language.detect("本内容は一般的な情報提供を目的としたものです").lang == "ja"
    code = "Voici le correctif :\n```python\ndef add(a, b):\n    return a + b\n```\n" * 2
    assert "def add" not in language.prose(code, "markdown")
    doc = '{"summary": "Das Projekt ist im Zeitplan und im Budget geblieben.", "risk": "low"}'
    assert language.prose(doc, "json").startswith("Das Projekt")
    english_code_answer = "Here is the fix:\n```python\n" + "x = compute(y)\n" * 40 + "```"
    assert language.wrong_language(english_code_answer, "markdown", "en") is None


def test_search_folds_case_accents_and_punctuation() -> None:
    assert search.fold("Résumé — CV!") == " resume cv "
    assert search.terms("  Cease-and-DESIST ") == ["cease", "and", "desist"]


def test_json_extraction() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert jsonout.validate('Sure!\n```json\n{"a": 1}\n```\nDone.', schema).document == {"a": 1}
    assert jsonout.validate('Result: {"a": 2} -- ok', schema).ok
    bad = jsonout.validate('{"a": "one", "b": 1}', schema)
    assert not bad.ok and any("$.a" in e for e in bad.errors)
    assert not jsonout.validate("no json here", schema).ok
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        jsonout.check_schema({"type": 12})


async def test_repository_is_tenant_scoped(sessions: async_sessionmaker[AsyncSession]) -> None:
    # System sessions see every tenant's rows: what is checked is the repository filter.
    now = datetime.now(UTC)
    tenants = []
    for _ in range(2):
        t = await admin.create_tenant(sessions, name=f"repo-{uuid.uuid4().hex[:8]}", actor="t")
        tenants.append(t.id)
    a, b = tenants
    async with system_session(sessions) as s, s.begin():
        t, v = await repo.create_custom(
            s,
            tenant_id=a,
            template_id="house-style",
            definition={"id": "house-style", "version": 1},
            overrides_builtin=False,
            created_by=None,
            at=now,
        )
        found = await repo.find_custom(s, tenant_id=a, template_id="house-style", for_update=True)
        assert found is not None
        v2 = await repo.add_custom_version(
            s, tenant_id=a, template=found, definition={"v": 2}, created_by=None, at=now
        )
        assert v2.version == 2
        with pytest.raises(ValueError, match="another tenant"):
            await repo.add_custom_version(
                s, tenant_id=b, template=found, definition={}, created_by=None, at=now
            )
        assert await repo.hide(s, tenant_id=a, template_id="press-release", created_by=None, at=now)
        assert not await repo.hide(
            s, tenant_id=a, template_id="press-release", created_by=None, at=now
        )
    async with system_session(sessions) as s:
        latest = await repo.get_custom_version(s, tenant_id=a, template_id="house-style")
        assert latest is not None and latest[1].definition == {"v": 2}
        first = await repo.get_custom_version(s, tenant_id=a, template_id="house-style", version=1)
        assert first is not None and first[1].definition["id"] == "house-style"
        assert [
            x.version
            for x in await repo.list_custom_versions(s, tenant_id=a, template_id="house-style")
        ] == [1, 2]
        assert await repo.get_custom_version(s, tenant_id=b, template_id="house-style") is None
        assert await repo.list_latest_custom(s, tenant_id=b) == []
        assert [x.template_id for x, _ in await repo.list_latest_custom(s, tenant_id=a)] == [
            "house-style"
        ]
        assert await repo.hidden_ids(s, tenant_id=a) == {"press-release"}
        assert await repo.hidden_ids(s, tenant_id=b) == set()
    async with system_session(sessions) as s, s.begin():
        assert not await repo.delete_custom(s, tenant_id=b, template_id="house-style")
        assert not await repo.unhide(s, tenant_id=b, template_id="press-release")
        assert await repo.delete_custom(s, tenant_id=a, template_id="house-style")
        assert await repo.unhide(s, tenant_id=a, template_id="press-release")
    async with system_session(sessions) as s:
        assert await repo.get_custom_version(s, tenant_id=a, template_id="house-style") is None
        assert await repo.hidden_ids(s, tenant_id=a) == set()
    assert t.id and v.version == 1
