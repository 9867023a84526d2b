"""Browsing, search, localization, rendering and every bad-input case of the templates
API, against a live server."""

from __future__ import annotations

from typing import Any

import pytest

from polymodal.templates.catalog import builtin_catalog
from polymodal.templates.schema import CATEGORIES, LANGUAGES
from tests.templates.conftest import TemplatesEnv

CATALOG = builtin_catalog()
NDA = "mutual-nda"
CDL = "cease-and-desist-letter"


def _example(template_id: str) -> dict[str, Any]:
    return dict(CATALOG.entries[template_id].template.example)


# --- listing, filters, search, pagination ------------------------------------------------------


def test_list_pages_through_the_whole_catalog(tenv: TemplatesEnv) -> None:
    seen: list[str] = []
    with tenv.client() as c:
        offset = 0
        while True:
            page = c.get("/templates", params={"limit": 40, "offset": offset}).json()
            assert page["total"] == len(CATALOG)
            assert page["limit"] == 40 and page["offset"] == offset
            seen += [t["id"] for t in page["data"]]
            if len(page["data"]) < 40:
                break
            offset += 40
    assert seen == [e.id for e in CATALOG]  # catalog order, no gaps, no repeats


def test_filter_by_category_and_tag(tenv: TemplatesEnv) -> None:
    with tenv.client() as c:
        legal = c.get("/templates", params={"category": "legal", "limit": 200}).json()
        assert legal["total"] == sum(1 for e in CATALOG if e.template.category == "legal")
        assert {t["category"] for t in legal["data"]} == {"legal"}
        tag = CATALOG.entries[NDA].template.tags[0]
        tagged = c.get("/templates", params={"tag": tag}).json()
        assert NDA in [t["id"] for t in tagged["data"]]
        assert all(tag in t["tags"] for t in tagged["data"])
        none = c.get("/templates", params={"tag": "no-such-tag-anywhere"}).json()
        assert none == {**none, "total": 0, "data": []}


@pytest.mark.parametrize(
    ("q", "lang", "expected"),
    [
        ("mise en demeure", "fr", "cease-and-desist-letter"),  # French title words
        ("Unterlassung", "de", "cease-and-desist-letter"),  # German, inflected prefix
        ("警告書", "ja", "cease-and-desist-letter"),  # Japanese, no word boundaries
        ("confidentialite", None, NDA),  # accents folded
        ("cease desist", None, "cease-and-desist-letter"),
    ],
)
def test_full_text_search_over_localized_titles_and_descriptions(
    tenv: TemplatesEnv, q: str, lang: str | None, expected: str
) -> None:
    params = {"q": q, **({"lang": lang} if lang else {})}
    with tenv.client() as c:
        found = c.get("/templates", params=params).json()
    ids = [t["id"] for t in found["data"]]
    assert expected in ids[:3], ids
    assert found["total"] == len(ids) < len(CATALOG)


def test_search_requires_every_term(tenv: TemplatesEnv) -> None:
    with tenv.client() as c:
        assert c.get("/templates", params={"q": "cease zzzzqqq"}).json()["total"] == 0


@pytest.mark.parametrize("lang", LANGUAGES)
def test_listing_is_localized(tenv: TemplatesEnv, lang: str) -> None:
    with tenv.client() as c:
        r = c.get("/templates", params={"lang": lang, "category": "legal", "limit": 1})
    item = r.json()["data"][0]
    expected = CATALOG.entries[item["id"]].template.i18n[lang]
    assert (item["title"], item["description"]) == (expected.title, expected.description)
    assert item["lang"] == lang and r.headers["content-language"] == lang


def test_detail_is_localized_by_accept_language(tenv: TemplatesEnv) -> None:
    t = CATALOG.entries[CDL].template
    with tenv.client(**{"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5"}) as c:
        view = c.get(f"/templates/{CDL}").json()
        forced = c.get(f"/templates/{CDL}", params={"lang": "ar"}).json()  # the query wins
    assert view["lang"] == "pt" and view["title"] == t.i18n["pt"].title
    assert [f["label"] for f in view["fields"]] == [f.labels["pt"] for f in t.fields]
    assert [f["help"] for f in view["fields"]] == [f.help["pt"] for f in t.fields]
    enum = next(f for f in t.fields if f.options)
    shown = next(f for f in view["fields"] if f["name"] == enum.name)
    assert [o["label"] for o in shown["options"]] == [o.labels["pt"] for o in enum.options or ()]
    assert view["disclaimer"] == "legal"
    assert view["disclaimer_text"] == CATALOG.styles["pt"].disclaimers.legal
    assert forced["lang"] == "ar" and forced["direction"] == "rtl"
    assert forced["title"] == t.i18n["ar"].title


def test_unsupported_accept_language_falls_back_to_english(tenv: TemplatesEnv) -> None:
    with tenv.client(**{"Accept-Language": "sv-SE,fi;q=0.8"}) as c:
        assert c.get(f"/templates/{NDA}").json()["lang"] == "en"


# --- render ---------------------------------------------------------------------------------------


def test_render_returns_the_final_prompt_without_a_model_call(tenv: TemplatesEnv) -> None:
    inputs = _example("cease-and-desist-letter")
    with tenv.client() as c:
        r = c.post(
            "/templates/cease-and-desist-letter/render",
            json={"inputs": inputs, "locale": "es-MX", "register": "informal"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["lang"], body["locale"], body["register"]) == ("es", "es-MX", "informal")
    assert not body["lang_detected_from_inputs"]
    es = CATALOG.styles["es"]
    assert es.registers["informal"] in body["system"]
    assert "es-MX" in body["system"] and es.locales["es-MX"].currency in body["system"]
    assert inputs["facts"] in body["prompt"]
    assert body["prompt"].endswith("Write the answer in Spanish (es-MX).")
    assert body["messages"] == [
        {"role": "system", "content": body["system"]},
        {"role": "user", "content": body["prompt"]},
    ]
    assert body["disclaimer"] == es.disclaimers.legal
    assert tenv.fake.requests == []  # no upstream call


SPANISH = (
    "Nuestra empresa familiar de Valencia fabrica bicicletas eléctricas plegables para "
    "quienes se desplazan a diario por la ciudad y quieren dejar el coche en casa."
)


def test_render_detects_the_output_language_from_the_inputs(tenv: TemplatesEnv) -> None:
    t = CATALOG.entries["product-launch-email"].template
    inputs = dict(t.example)
    for field in t.fields:
        if field.type in ("string", "text") and field.name in inputs:
            inputs[field.name] = SPANISH[: field.max_length]
    with tenv.client() as c:
        body = c.post("/templates/product-launch-email/render", json={"inputs": inputs}).json()
    assert body["lang"] == "es" and body["lang_detected_from_inputs"]
    assert body["locale"] == CATALOG.styles["es"].default_locale
    assert body["register"] == CATALOG.styles["es"].default_register


def test_render_arabic_is_right_to_left(tenv: TemplatesEnv) -> None:
    with tenv.client() as c:
        body = c.post(
            "/templates/cease-and-desist-letter/render",
            json={"inputs": _example("cease-and-desist-letter"), "lang": "ar"},
        ).json()
    assert body["direction"] == "rtl" and "right to left" in body["system"]


# --- bad input -> 422 naming the field ---------------------------------------------------------


def _error(r: Any, param: str) -> str:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"].startswith(param + ": ")
    return str(error["message"])


def test_missing_required_field(tenv: TemplatesEnv) -> None:
    inputs = _example(NDA)
    required = next(f for f in CATALOG.entries[NDA].template.fields if f.required)
    del inputs[required.name]
    with tenv.client() as c:
        r = c.post(f"/templates/{NDA}/render", json={"inputs": inputs})
    message = _error(r, f"inputs.{required.name}")
    assert required.labels["en"] in message and "required" in message
    assert r.json()["error"]["code"] == "input_required"


def test_errors_speak_the_requested_language(tenv: TemplatesEnv) -> None:
    inputs = _example(NDA)
    required = next(f for f in CATALOG.entries[NDA].template.fields if f.required)
    inputs[required.name] = "   "  # blank counts as missing
    with tenv.client() as c:
        de = c.post(f"/templates/{NDA}/generate", json={"inputs": inputs, "lang": "de"})
        ja = c.post(f"/templates/{NDA}/render", json={"inputs": inputs, "lang": "ja"})
    assert _error(de, f"inputs.{required.name}").endswith(
        f"„{required.labels['de']}“ ist ein Pflichtfeld."
    )
    assert _error(ja, f"inputs.{required.name}").endswith(
        f"「{required.labels['ja']}」は必須です。"
    )
    assert tenv.fake.requests == []


def test_errors_follow_accept_language_without_lang(tenv: TemplatesEnv) -> None:
    inputs = _example(NDA)
    inputs["no_such_field"] = "x"
    with tenv.client(**{"Accept-Language": "fr-CA"}) as c:
        r = c.post(f"/templates/{NDA}/render", json={"inputs": inputs})
    assert _error(r, "inputs.no_such_field").endswith("n'est pas un champ de ce modèle.")


def test_value_too_long(tenv: TemplatesEnv) -> None:
    t = CATALOG.entries[NDA].template
    field = next(f for f in t.fields if f.type in ("string", "text") and f.max_length)
    inputs = {**_example(NDA), field.name: "x" * ((field.max_length or 0) + 1)}
    with tenv.client() as c:
        r = c.post(f"/templates/{NDA}/render", json={"inputs": inputs, "lang": "es"})
    message = _error(r, f"inputs.{field.name}")
    assert f"como máximo {field.max_length} caracteres" in message
    assert r.json()["error"]["code"] == "input_too_long"


def test_option_outside_the_enum(tenv: TemplatesEnv) -> None:
    t = CATALOG.entries[CDL].template
    field = next(f for f in t.fields if f.type == "enum")
    inputs = {**_example(CDL), field.name: "not-an-option"}
    with tenv.client() as c:
        r = c.post(f"/templates/{CDL}/render", json={"inputs": inputs})
    message = _error(r, f"inputs.{field.name}")
    assert all(o.value in message for o in field.options or ())


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (0, "input_too_small"),
        (61, "input_too_large"),
        ("ten", "input_type_integer"),
        (True, "input_type_integer"),
    ],
)
def test_integer_range_and_type(tenv: TemplatesEnv, value: Any, code: str) -> None:
    inputs = {**_example("cease-and-desist-letter"), "deadline_days": value}
    with tenv.client() as c:
        r = c.post("/templates/cease-and-desist-letter/render", json={"inputs": inputs})
    _error(r, "inputs.deadline_days")
    assert r.json()["error"]["code"] == code


def test_integer_from_a_form_string_is_accepted(tenv: TemplatesEnv) -> None:
    inputs = {**_example("cease-and-desist-letter"), "deadline_days": "21"}
    with tenv.client() as c:
        body = c.post("/templates/cease-and-desist-letter/render", json={"inputs": inputs}).json()
    assert "Deadline: 21 days" in body["prompt"]


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        ({"lang": "xx"}, "lang", "unknown language"),
        ({"lang": "es", "locale": "fr-FR"}, "locale", "fr-FR"),
        ({"locale": "es-ZZ"}, "locale", "es-ES"),
        ({"lang": "de", "register": "pirate"}, "register", "formal, informal"),
    ],
)
def test_unknown_language_locale_or_register(
    tenv: TemplatesEnv, payload: dict[str, str], param: str, fragment: str
) -> None:
    with tenv.client() as c:
        r = c.post(f"/templates/{NDA}/render", json={"inputs": _example(NDA), **payload})
    assert fragment in _error(r, param)


def test_unknown_display_language_and_category(tenv: TemplatesEnv) -> None:
    with tenv.client() as c:
        _error(c.get("/templates", params={"lang": "klingon"}), "lang")
        _error(c.get(f"/templates/{NDA}", params={"lang": "xx"}), "lang")
        assert CATEGORIES[0] != "poetry"
        _error(c.get("/templates", params={"category": "poetry"}), "category")


def test_unknown_template_is_404(tenv: TemplatesEnv) -> None:
    with tenv.client() as c:
        for r in (
            c.get("/templates/no-such-template"),
            c.post("/templates/no-such-template/render", json={"inputs": {}}),
            c.post("/templates/no-such-template/generate", json={"inputs": {}}),
        ):
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "template_not_found"


def test_requests_need_a_key(tenv: TemplatesEnv) -> None:
    with tenv.client("not-a-key") as c:
        assert c.get("/templates").status_code == 401
