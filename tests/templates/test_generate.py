"""Generation through the gateway: sync and streamed, the usage ledger's feature tag, the
disclaimer in the output language, the wrong-language retry and the JSON repair."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson

from polymodal.templates.catalog import builtin_catalog
from tests.templates.conftest import TemplatesEnv

CATALOG = builtin_catalog()
CDL = "cease-and-desist-letter"  # legal: markdown with a disclaimer, tier critical
TRIAGE = "ticket-triage"  # JSON output

SPANISH_LETTER = (
    "Muy señores nuestros: nos dirigimos a ustedes en nombre de Alpenkind Outdoor GmbH, "
    "titular de la marca de la Unión Europea ALPENKIND, para requerirles que cesen de "
    "inmediato en el uso del signo ALPENKINDER en mochilas y prendas de exterior. "
    "Les concedemos un plazo de diez días para confirmar por escrito su cumplimiento."
)
ENGLISH_LETTER = (
    "Dear Sirs, we write on behalf of Alpenkind Outdoor GmbH, the owner of the European "
    "Union trade mark ALPENKIND, to demand that you immediately stop using the sign "
    "ALPENKINDER for backpacks and outdoor clothing. You have ten days to confirm in "
    "writing that you have complied with these demands, failing which we will sue."
)
TRIAGE_DOC = {
    "category": "account access",
    "team": "Identity team",
    "priority": "urgent",
    "sentiment": "very_negative",
    "intent": "Regain access to the company admin account before payroll",
    "language": "en",
    "flags": ["security"],
    "reasoning": "The reset address was changed by someone else: a likely account takeover "
    "blocking a premium customer's whole team the day before payroll.",
    "suggested_first_reply_points": ["We have locked the account to protect it"],
    "needs_human_review": True,
}


def _example(template_id: str) -> dict[str, Any]:
    return dict(CATALOG.entries[template_id].template.example)


def _sse(r: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    done = bool(lines) and lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines if x != "[DONE]"], done


def _content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"])


def _last_user(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if m["role"] == "user"]
    return str(users[-1]["content"])


def _bodies(tenv: TemplatesEnv) -> list[dict[str, Any]]:
    return [r["body"] for r in tenv.fake.requests if "/chat/completions" in r["path"]]


# --- sync ----------------------------------------------------------------------------------------


def test_generate_in_the_requested_language_with_the_disclaimer(tenv: TemplatesEnv) -> None:
    tenv.fake.push_replies(SPANISH_LETTER)
    with tenv.client() as c:
        r = c.post(f"/templates/{CDL}/generate", json={"inputs": _example(CDL), "lang": "es"})
    assert r.status_code == 200, r.text
    body = r.json()
    disclaimer = CATALOG.styles["es"].disclaimers.legal
    assert body["output"] == f"{SPANISH_LETTER}\n\n---\n\n*{disclaimer}*"
    assert body["disclaimer"] == disclaimer
    assert (body["lang"], body["locale"], body["register"]) == ("es", "es-ES", "formal")
    assert body["output_language"] == "es" and not body["language_retry"]
    assert body["calls"] == 1 and body["usage"]["completion_tokens"] > 0
    assert "tier=critical" in r.headers["x-polymodal-route"]  # the template's tier hint
    assert r.headers["x-polymodal-deployment"] == "fake-writer"
    assert int(r.headers["x-ratelimit-limit-requests"]) > 0  # as on /v1/chat/completions

    (sent,) = _bodies(tenv)
    assert sent["messages"][0]["role"] == "system"
    assert CATALOG.styles["es"].registers["formal"] in sent["messages"][0]["content"]
    assert _example(CDL)["facts"] in sent["messages"][1]["content"]

    rows = tenv.usage_rows(r.headers["x-request-id"])
    assert [(row.feature, row.status, row.stream) for row in rows] == [
        (f"template:{CDL}", "ok", False)
    ]
    assert str(rows[0].tenant_id) == tenv.tenant_a


def test_generate_without_lang_answers_in_the_inputs_language(tenv: TemplatesEnv) -> None:
    with tenv.client() as c:  # the fake echoes the prompt: English, like the inputs
        r = c.post(f"/templates/{CDL}/generate", json={"inputs": _example(CDL)})
    body = r.json()
    assert body["lang"] == "en" and body["lang_detected_from_inputs"]
    assert body["output"].startswith("echo: ")
    assert body["output"].endswith(f"*{CATALOG.styles['en'].disclaimers.legal}*")


def test_an_explicit_model_pins_the_deployment(tenv: TemplatesEnv) -> None:
    with tenv.client() as c:
        r = c.post(
            f"/templates/{CDL}/generate",
            json={"inputs": _example(CDL), "lang": "en", "model": "fake-writer", "max_tokens": 50},
        )
    assert r.status_code == 200, r.text
    assert "tier=pinned" in r.headers["x-polymodal-route"]
    assert _bodies(tenv)[0]["max_tokens"] == 50


def test_wrong_language_is_retried_once_with_a_stronger_instruction(tenv: TemplatesEnv) -> None:
    before = tenv.metric(
        "polymodal_template_language_retries_total", language="es", outcome="fixed"
    )
    tenv.fake.push_replies(ENGLISH_LETTER, SPANISH_LETTER)
    with tenv.client() as c:
        r = c.post(f"/templates/{CDL}/generate", json={"inputs": _example(CDL), "lang": "es"})
    body = r.json()
    assert body["language_retry"] and body["calls"] == 2
    assert body["output"].startswith(SPANISH_LETTER) and ENGLISH_LETTER not in body["output"]
    first, second = _bodies(tenv)
    assert "IMPORTANT" not in _last_user(first)
    assert "IMPORTANT" in _last_user(second) and "English" in _last_user(second)
    rows = tenv.usage_rows(r.headers["x-request-id"])
    assert [row.feature for row in rows] == [f"template:{CDL}"] * 2
    after = tenv.metric("polymodal_template_language_retries_total", language="es", outcome="fixed")
    assert after == before + 1


def test_a_retry_that_is_still_wrong_is_counted_and_returned(tenv: TemplatesEnv) -> None:
    before = tenv.metric(
        "polymodal_template_language_retries_total", language="de", outcome="still_wrong"
    )
    tenv.fake.push_replies(ENGLISH_LETTER, ENGLISH_LETTER)
    with tenv.client() as c:
        r = c.post(f"/templates/{CDL}/generate", json={"inputs": _example(CDL), "lang": "de"})
    body = r.json()
    assert body["language_retry"] and body["calls"] == 2 and body["output_language"] == "en"
    after = tenv.metric(
        "polymodal_template_language_retries_total", language="de", outcome="still_wrong"
    )
    assert after == before + 1


# --- JSON outputs -------------------------------------------------------------------------------


def test_json_output_is_validated_and_parsed(tenv: TemplatesEnv) -> None:
    tenv.fake.push_replies("```json\n" + json.dumps(TRIAGE_DOC) + "\n```")
    with tenv.client() as c:
        r = c.post(f"/templates/{TRIAGE}/generate", json={"inputs": _example(TRIAGE), "lang": "en"})
    body = r.json()
    assert body["json"] == TRIAGE_DOC and not body["json_repaired"] and body["calls"] == 1
    assert json.loads(body["output"]) == TRIAGE_DOC  # the fence is gone
    schema = CATALOG.entries[TRIAGE].template.output.json_schema
    assert json.dumps(schema, separators=(",", ":")) in _bodies(tenv)[0]["messages"][0]["content"]


def test_json_that_breaks_the_schema_gets_one_repair(tenv: TemplatesEnv) -> None:
    before = tenv.metric("polymodal_template_json_repairs_total", outcome="repaired")
    broken = {**TRIAGE_DOC, "priority": "whenever"}
    del broken["team"]
    tenv.fake.push_replies(json.dumps(broken), json.dumps(TRIAGE_DOC))
    with tenv.client() as c:
        r = c.post(f"/templates/{TRIAGE}/generate", json={"inputs": _example(TRIAGE), "lang": "en"})
    body = r.json()
    assert r.status_code == 200 and body["json"] == TRIAGE_DOC and body["json_repaired"]
    first, repair = _bodies(tenv)
    assert repair["messages"][:2] == first["messages"]
    assert repair["messages"][2] == {"role": "assistant", "content": json.dumps(broken)}
    problems = _last_user(repair)
    assert "'team' is a required property" in problems and "$.priority" in problems
    after = tenv.metric("polymodal_template_json_repairs_total", outcome="repaired")
    assert after == before + 1
    assert len(tenv.usage_rows(r.headers["x-request-id"])) == 2


def test_json_still_broken_after_the_repair_is_an_error(tenv: TemplatesEnv) -> None:
    before = tenv.metric("polymodal_template_json_repairs_total", outcome="failed")
    tenv.fake.push_replies("Sure! Here is the triage: urgent.", "{not json")
    with tenv.client() as c:
        r = c.post(f"/templates/{TRIAGE}/generate", json={"inputs": _example(TRIAGE), "lang": "en"})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "invalid_json_output"
    assert tenv.metric("polymodal_template_json_repairs_total", outcome="failed") == before + 1


# --- streaming --------------------------------------------------------------------------------


def test_streaming_generation(tenv: TemplatesEnv) -> None:
    tenv.fake.push_replies(SPANISH_LETTER)
    with (
        tenv.client() as c,
        c.stream(
            "POST",
            f"/templates/{CDL}/generate",
            json={"inputs": _example(CDL), "lang": "es", "stream": True},
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-polymodal-language-retry"] == "0"
        chunks, done = _sse(r)
        request_id = r.headers["x-request-id"]
    disclaimer = CATALOG.styles["es"].disclaimers.legal
    assert done and len(chunks) > 10  # streamed word by word, not in one piece
    assert _content(chunks) == f"{SPANISH_LETTER}\n\n---\n\n*{disclaimer}*"
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["polymodal"]["template"] == CDL and final["polymodal"]["lang"] == "es"
    assert final["polymodal"]["disclaimer"] == disclaimer
    rows = tenv.usage_rows(request_id)
    assert [(row.feature, row.stream, row.status) for row in rows] == [
        (f"template:{CDL}", True, "ok")
    ]


def test_a_wrong_language_stream_is_restarted_before_the_client_sees_it(
    tenv: TemplatesEnv,
) -> None:
    tenv.fake.push_replies(ENGLISH_LETTER, SPANISH_LETTER)
    with (
        tenv.client() as c,
        c.stream(
            "POST",
            f"/templates/{CDL}/generate",
            json={"inputs": _example(CDL), "lang": "es", "stream": True},
        ) as r,
    ):
        assert r.headers["x-polymodal-language-retry"] == "1"
        chunks, done = _sse(r)
        request_id = r.headers["x-request-id"]
    text = _content(chunks)
    assert done and text.startswith(SPANISH_LETTER) and "Dear Sirs" not in text
    assert chunks[-1]["polymodal"]["language_retry"] is True
    assert "IMPORTANT" in _last_user(_bodies(tenv)[1])
    rows = tenv.usage_rows(request_id)
    assert [row.status for row in rows] == ["client_closed", "ok"]  # the abandoned attempt
    assert {row.feature for row in rows} == {f"template:{CDL}"}


def test_a_json_stream_delivers_the_validated_document(tenv: TemplatesEnv) -> None:
    broken = {k: v for k, v in TRIAGE_DOC.items() if k != "reasoning"}
    tenv.fake.push_replies(json.dumps(broken), json.dumps(TRIAGE_DOC))
    with (
        tenv.client() as c,
        c.stream(
            "POST",
            f"/templates/{TRIAGE}/generate",
            json={"inputs": _example(TRIAGE), "lang": "en", "stream": True},
        ) as r,
    ):
        chunks, done = _sse(r)
    assert done and orjson.loads(_content(chunks)) == TRIAGE_DOC
    assert chunks[-1]["polymodal"]["json_repaired"] is True


def test_generation_errors_are_clean_http_errors(tenv: TemplatesEnv) -> None:
    tenv.fake.set_faults(status=400, error_message="bad request from upstream")
    with tenv.client() as c:
        r = c.post(f"/templates/{CDL}/generate", json={"inputs": _example(CDL), "lang": "en"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "upstream_bad_request"
