"""Tenant custom templates: CRUD with versions, the sandbox safety check, hiding and
overriding built-ins, roles, and isolation between tenants."""

from __future__ import annotations

from typing import Any

import pytest

from polymodal.templates.catalog import builtin_catalog
from tests.templates.conftest import TemplatesEnv, unique_id

CATALOG = builtin_catalog()
BASE = "mutual-nda"


def definition(template_id: str, *, prompt_note: str = "") -> dict[str, Any]:
    """A full definition (all 11 languages), built from a built-in and renamed."""
    data = CATALOG.entries[BASE].template.model_dump(mode="json", by_alias=True)
    data.pop("version")
    data["id"] = template_id
    data["i18n"]["en"]["title"] = f"House NDA {template_id}"
    data["prompt"] = data["prompt"] + ("\n" + prompt_note if prompt_note else "")
    return data


def _create(tenv: TemplatesEnv, data: dict[str, Any], key: str | None = None, **extra: Any) -> Any:
    with tenv.client(key) as c:
        return c.post("/templates/custom", json={"template": data, **extra})


def test_create_read_update_versions_delete(tenv: TemplatesEnv) -> None:
    tid = unique_id("house-nda")
    r = _create(tenv, definition(tid))
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["id"], created["version"], created["latest_version"]) == (tid, 1, 1)
    assert not created["overrides_builtin"] and created["template"]["version"] == 1

    with tenv.client() as c:
        r = c.put(
            f"/templates/custom/{tid}",
            json={"template": definition(tid, prompt_note="Use British spelling.")},
        )
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["latest_version"]) == (2, 2)

        latest = c.get(f"/templates/custom/{tid}").json()
        first = c.get(f"/templates/custom/{tid}", params={"version": 1}).json()
        assert latest["version"] == 2 and latest["template"]["prompt"].endswith(
            "Use British spelling."
        )
        assert first["version"] == 1 and "British" not in first["template"]["prompt"]
        missing = c.get(f"/templates/custom/{tid}", params={"version": 9})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "template_version_not_found"
        versions = c.get(f"/templates/custom/{tid}/versions").json()["data"]
        assert [v["version"] for v in versions] == [1, 2]

        # The custom template is part of the tenant's catalog and renders (latest version).
        listed = c.get("/templates", params={"q": f"house nda {tid}"}).json()
        assert [(t["id"], t["source"], t["version"]) for t in listed["data"]] == [
            (tid, "custom", 2)
        ]
        inputs = CATALOG.entries[BASE].template.example
        rendered = c.post(f"/templates/{tid}/render", json={"inputs": inputs}).json()
        assert "Use British spelling." in rendered["prompt"]
        assert rendered["template"] == {"id": tid, "version": 2, "source": "custom"}
        assert tid in [t["id"] for t in c.get("/templates/custom").json()["data"]]

        assert c.delete(f"/templates/custom/{tid}").status_code == 204
        assert c.get(f"/templates/custom/{tid}").status_code == 404
        assert c.get(f"/templates/{tid}").status_code == 404
        assert c.delete(f"/templates/custom/{tid}").status_code == 404


def test_generation_with_a_custom_template_is_attributed_to_it(tenv: TemplatesEnv) -> None:
    tid = unique_id("house-nda")
    assert _create(tenv, definition(tid)).status_code == 201
    with tenv.client() as c:
        r = c.post(
            f"/templates/{tid}/generate",
            json={"inputs": CATALOG.entries[BASE].template.example, "lang": "en"},
        )
    assert r.status_code == 200, r.text
    rows = tenv.usage_rows(r.headers["x-request-id"])
    assert [row.feature for row in rows] == [f"template:{tid}"]


def test_duplicate_and_reserved_ids(tenv: TemplatesEnv) -> None:
    tid = unique_id("dup")
    assert _create(tenv, definition(tid)).status_code == 201
    again = _create(tenv, definition(tid))
    assert again.status_code == 409 and again.json()["error"]["code"] == "template_exists"
    reserved = _create(tenv, definition("custom"))
    assert reserved.status_code == 422 and reserved.json()["error"]["param"] == "template.id"


def test_update_cannot_change_the_id_or_touch_a_missing_template(tenv: TemplatesEnv) -> None:
    tid = unique_id("fixed")
    assert _create(tenv, definition(tid)).status_code == 201
    with tenv.client() as c:
        moved = c.put(f"/templates/custom/{tid}", json={"template": definition("elsewhere")})
        assert moved.status_code == 422 and moved.json()["error"]["param"] == "template.id"
        ghost = c.put("/templates/custom/no-such-one", json={"template": definition("no-such-one")})
        assert ghost.status_code == 404


@pytest.mark.parametrize(
    ("part", "source", "fragment"),
    [
        ("prompt", "{{ party_a.__class__.__mro__ }}", "'__mro__' is not allowed"),
        ("prompt", "{{ party_a['__class__'] }}", "'__class__' is not allowed"),
        ("prompt", "{{ party_a | attr('upper') }}", "'attr' filter is not allowed"),
        ("prompt", "{{ [party_a] | map(attribute='__len__') | list }}", "'__len__'"),
        ("prompt", "{% import 'other.j2' as o %}", "'import' is not allowed"),
        ("prompt", "{% include 'secrets.txt' %}", "'include' is not allowed"),
        ("system", "{% extends 'base.j2' %}", "'extends' is not allowed"),
        ("prompt", "{{ cycler.__init__.__globals__ }}", "not allowed"),
        ("prompt", "{{ party_a.gi_frame }}", "'gi_frame' is not allowed"),
        ("prompt", "{% if party_a %}unclosed", "syntax error"),
        ("prompt", "{{ party_a | no_such_filter }}", "no_such_filter"),
        ("prompt", "Dear {{ customer_first_name }}", "undeclared variable 'customer_first_name'"),
        ("prompt", "{{ term_years + 'x' }}", "does not render with the example"),
    ],
)
def test_unsafe_or_broken_jinja_is_refused(
    tenv: TemplatesEnv, part: str, source: str, fragment: str
) -> None:
    data = definition(unique_id("bad"))
    data[part] = data[part] + "\n" + source
    r = _create(tenv, data)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == f"template.{part}"
    assert error["message"].startswith(f"template.{part}: ")
    assert fragment in error["message"]


@pytest.mark.parametrize(
    ("mutate", "param"),
    [
        (lambda d: d["i18n"].pop("ja"), "template.i18n"),
        (lambda d: d.update(category="astrology"), "template.category"),
        (lambda d: d["fields"][0].pop("max_length"), "template.fields[0]"),
        (lambda d: d["example"].pop("party_a"), "template"),
        (lambda d: d["example"].update(party_a="x" * 5000), "template.example.party_a"),
        (lambda d: d["output"].update(format="json"), "template.output"),
        (
            lambda d: d["output"].update(format="json", schema={"type": "objekt"}),
            "template.output.schema",
        ),
    ],
)
def test_custom_templates_get_the_built_in_validation(
    tenv: TemplatesEnv, mutate: Any, param: str
) -> None:
    data = definition(unique_id("invalid"))
    mutate(data)
    r = _create(tenv, data)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param


def test_hide_and_show_a_built_in(tenv: TemplatesEnv) -> None:
    target = "press-release"
    assert target in CATALOG.entries
    with tenv.client() as c, tenv.client(tenv.dev_b) as other:
        total = c.get("/templates").json()["total"]
        assert c.put(f"/templates/{target}/hidden").status_code == 204
        try:
            assert c.get(f"/templates/{target}").status_code == 404
            render = c.post(f"/templates/{target}/render", json={"inputs": {}})
            assert render.status_code == 404
            assert c.get("/templates").json()["total"] == total - 1
            assert target in c.get("/templates/custom").json()["hidden"]
            # Another tenant still sees it.
            assert other.get(f"/templates/{target}").status_code == 200
        finally:
            assert c.delete(f"/templates/{target}/hidden").status_code == 204
        assert c.get(f"/templates/{target}").status_code == 200
        assert c.get("/templates").json()["total"] == total
        assert c.put("/templates/no-such-builtin/hidden").status_code == 404


def test_override_a_built_in_for_one_tenant(tenv: TemplatesEnv) -> None:
    target = "meeting-agenda"
    data = CATALOG.entries[target].template.model_dump(mode="json", by_alias=True)
    data["prompt"] += "\nAlways end with our house rule: no meeting without an agenda."
    with tenv.client() as c, tenv.client(tenv.dev_b) as other:
        refused = _create(tenv, data)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "builtin_template"
        assert _create(tenv, definition(unique_id("x")), override=True).status_code == 422

        created = _create(tenv, data, override=True)
        assert created.status_code == 201 and created.json()["overrides_builtin"]
        try:
            example = CATALOG.entries[target].template.example
            mine = c.post(f"/templates/{target}/render", json={"inputs": example}).json()
            theirs = other.post(f"/templates/{target}/render", json={"inputs": example}).json()
            assert "house rule" in mine["prompt"] and mine["template"]["source"] == "custom"
            assert "house rule" not in theirs["prompt"]
            assert theirs["template"]["source"] == "builtin"
            ids = [t["id"] for t in c.get("/templates", params={"limit": 200}).json()["data"]]
            assert ids.count(target) == 1  # replaced in place, not listed twice
        finally:
            assert c.delete(f"/templates/custom/{target}").status_code == 204
        back = c.post(f"/templates/{target}/render", json={"inputs": example}).json()
        assert back["template"]["source"] == "builtin" and "house rule" not in back["prompt"]


def test_tenant_isolation(tenv: TemplatesEnv) -> None:
    tid = unique_id("secret")
    assert _create(tenv, definition(tid)).status_code == 201
    with tenv.client(tenv.dev_b) as b:
        for r in (
            b.get(f"/templates/custom/{tid}"),
            b.get(f"/templates/custom/{tid}/versions"),
            b.get(f"/templates/{tid}"),
            b.post(f"/templates/{tid}/render", json={"inputs": {}}),
            b.put(f"/templates/custom/{tid}", json={"template": definition(tid)}),
            b.delete(f"/templates/custom/{tid}"),
        ):
            assert r.status_code == 404, r.text
        assert tid not in [t["id"] for t in b.get("/templates/custom").json()["data"]]
        assert b.get("/templates", params={"q": tid}).json()["total"] == 0
        # B may use the same id for its own template.
        assert _create(tenv, definition(tid), key=tenv.dev_b).status_code == 201
    with tenv.client() as a:
        assert a.get(f"/templates/custom/{tid}").json()["version"] == 1


def test_only_editors_may_change_templates(tenv: TemplatesEnv) -> None:
    tid = unique_id("owned")
    assert _create(tenv, definition(tid)).status_code == 201
    with tenv.client(tenv.viewer_a) as viewer:
        assert _create(tenv, definition(unique_id("v")), key=tenv.viewer_a).status_code == 403
        put = viewer.put(f"/templates/custom/{tid}", json={"template": definition(tid)})
        assert put.status_code == 403
        assert viewer.delete(f"/templates/custom/{tid}").status_code == 403
        assert viewer.put("/templates/press-release/hidden").status_code == 403
        # Reading and using the tenant's templates is for every member.
        assert viewer.get(f"/templates/custom/{tid}").status_code == 200
        assert viewer.get(f"/templates/{tid}").status_code == 200


def test_updates_are_optimistic_with_if_match(tenv: TemplatesEnv) -> None:
    """Two editors start from version 1; the second save names a stale ETag and is
    refused with 412, writing nothing; a fresh ETag (or none) saves."""
    tid = unique_id("house-nda")
    created = _create(tenv, definition(tid))
    assert created.status_code == 201 and created.headers["etag"] == '"v1"'
    with tenv.client() as c:
        etag = c.get(f"/templates/custom/{tid}").headers["etag"]
        first = c.put(
            f"/templates/custom/{tid}",
            json={"template": definition(tid, prompt_note="Editor one.")},
            headers={"If-Match": etag},
        )
        assert first.status_code == 200, first.text
        assert first.headers["etag"] == '"v2"'

        stale = c.put(
            f"/templates/custom/{tid}",
            json={"template": definition(tid, prompt_note="Editor two.")},
            headers={"If-Match": etag},
        )
        assert stale.status_code == 412, stale.text
        error = stale.json()["error"]
        assert error["code"] == "version_mismatch"
        assert "version 2, not 1" in error["message"]
        latest = c.get(f"/templates/custom/{tid}").json()
        assert latest["latest_version"] == 2
        assert latest["template"]["prompt"].endswith("Editor one.")

        fresh = c.put(
            f"/templates/custom/{tid}",
            json={"template": definition(tid, prompt_note="Editor two.")},
            headers={"If-Match": first.headers["etag"]},
        )
        assert fresh.status_code == 200 and fresh.json()["version"] == 3

        garbled = c.put(
            f"/templates/custom/{tid}",
            json={"template": definition(tid)},
            headers={"If-Match": "yesterday"},
        )
        assert garbled.status_code == 422
        assert garbled.json()["error"]["param"] == "If-Match"
        assert c.get(f"/templates/custom/{tid}").json()["latest_version"] == 3


def test_a_custom_template_that_runs_too_long_is_stopped(tenv: TemplatesEnv) -> None:
    """A loop bomb that only fires on some input passes the save-time check (the example
    does not trigger it) but is stopped at the render time limit with a 422."""
    tid = unique_id("slow")
    data = definition(tid)
    bomb = (
        "{% if party_a == 'Bomb Ltd' %}{% for i in range(100000) %}"
        "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}"
    )
    data["prompt"] = data["prompt"] + "\n" + bomb
    assert _create(tenv, data).status_code == 201
    inputs = dict(CATALOG.entries[BASE].template.example, party_a="Bomb Ltd")
    with tenv.client() as c:
        r = c.post(f"/templates/{tid}/render", json={"inputs": inputs})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "template_render_error"
    assert "ran longer than 100 ms" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "source",
    ["{{ party_a * 100000000 }}", "{{ 2 ** 100000000 }}", "{{ [party_a] * 10**8 }}"],
)
def test_allocation_bombs_are_refused_at_save(tenv: TemplatesEnv, source: str) -> None:
    data = definition(unique_id("alloc"))
    data["prompt"] = data["prompt"] + "\n" + source
    r = _create(tenv, data)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "template.prompt"
    assert "not allowed" in r.json()["error"]["message"]
