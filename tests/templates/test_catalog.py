"""The shipped catalog is product content: every template loads, validates and renders in
all 11 languages, is described in real translations, and is not a near-copy of another."""

from __future__ import annotations

import collections
import itertools
import math
import re
from importlib import resources
from pathlib import Path

import py3langid
import pytest
import yaml

from polymodal.templates.catalog import Catalog, CatalogError, builtin_catalog, load_catalog
from polymodal.templates.inputs import input_text, validate_inputs
from polymodal.templates.prompting import VoiceRequest, render, resolve_voice
from polymodal.templates.schema import CATEGORIES, LANGUAGES

CATALOG = builtin_catalog()
IDS = [e.id for e in CATALOG]

# Near-duplicate thresholds. Jaccard similarity of word 5-shingles is the classic
# near-duplicate measure (Broder 1997); 0.3 already means long shared passages. TF-IDF
# cosine catches paraphrased copies that share vocabulary but not exact runs; 0.6 is far
# above the closest pair of genuinely different templates in this catalog (~0.26).
SHINGLE_SIZE = 5
MAX_SHINGLE_JACCARD = 0.30
MAX_TFIDF_COSINE = 0.60


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + SHINGLE_SIZE]) for i in range(len(words) - SHINGLE_SIZE + 1)}


def _jaccard(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _tfidf(docs: dict[str, str]) -> dict[str, dict[str, float]]:
    counts = {k: collections.Counter(re.findall(r"\w+", v.lower())) for k, v in docs.items()}
    df = collections.Counter(w for c in counts.values() for w in c)
    vectors = {}
    for key, c in counts.items():
        v = {w: (1 + math.log(n)) * math.log(len(docs) / df[w]) for w, n in c.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        vectors[key] = {w: x / norm for w, x in v.items()}
    return vectors


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    return sum(x * b.get(w, 0.0) for w, x in a.items())


def test_catalog_size_and_spread() -> None:
    assert len(CATALOG) >= 150
    per_category = collections.Counter(e.template.category for e in CATALOG)
    assert set(per_category) == set(CATEGORIES)
    thin = {c: n for c, n in per_category.items() if n < 8}
    assert not thin, f"categories with fewer than 8 templates: {thin}"


def test_every_file_is_loaded_and_named_after_its_id() -> None:
    root = resources.files("polymodal.templates") / "catalog"
    files = {p.name.removesuffix(".yaml") for c in root.iterdir() for p in c.iterdir()}
    assert files == set(IDS)
    for entry in CATALOG:
        assert entry.source == "builtin"
        assert entry.template.version >= 1
        assert 2 <= len(entry.template.fields) <= 6


@pytest.mark.parametrize("template_id", IDS)
def test_example_renders_in_every_language(template_id: str) -> None:
    entry = CATALOG.entries[template_id]
    context = validate_inputs(entry.template, entry.template.example, "en")
    for lang in LANGUAGES:
        voice, detected = resolve_voice(
            CATALOG, VoiceRequest(lang=lang), ui_lang="en", input_text=""
        )
        rendered = render(entry, context, voice, lang_detected=detected)
        style = CATALOG.styles[lang]
        assert style.name in rendered.system and voice.locale in rendered.system
        assert rendered.body and "{%" not in rendered.body
        # Every text the user typed reaches the prompt (a field the prompt ignores is a bug).
        for field in entry.template.fields:
            value = context[field.name]
            if field.type in ("string", "text") and value:
                assert value in rendered.body or value in rendered.system, field.name
        assert rendered.prompt().endswith(f"Write the answer in {style.name} ({voice.locale}).")
        if entry.template.disclaimer:
            assert rendered.disclaimer == style.disclaimer(entry.template.disclaimer)
        else:
            assert rendered.disclaimer is None


# Examples whose inputs are not (enough) English: an Impressum is German register data;
# "literary fiction" is too short to tell, so the caller's UI language (here fr) is used.
EXAMPLE_LANGUAGE_EXCEPTIONS = {"legal-notice-imprint": "de", "writing-prompt-generator": "fr"}


def test_output_language_is_detected_from_the_example_inputs() -> None:
    """Without ``lang`` the answer is in the language the inputs are written in."""
    for entry in CATALOG:
        context = validate_inputs(entry.template, entry.template.example, "en")
        text = input_text(entry.template, context)
        voice, detected = resolve_voice(CATALOG, VoiceRequest(), ui_lang="fr", input_text=text)
        expected = EXAMPLE_LANGUAGE_EXCEPTIONS.get(entry.id, "en")
        assert voice.lang == expected, (entry.id, text[:80])
        assert detected == (expected != "fr")


def test_titles_and_descriptions_are_real_translations() -> None:
    """py3langid over all ~100 languages it knows (not only ours): each localized title
    and description must be recognised as its own language, so no English copies."""
    wrong = []
    for entry in CATALOG:
        for lang, text in entry.template.i18n.items():
            found, _ = py3langid.classify(f"{text.title}. {text.description}")
            if found != lang:
                wrong.append((entry.id, lang, found))
        english = entry.template.i18n["en"]
        copies = [
            lang
            for lang, t in entry.template.i18n.items()
            if lang != "en" and (t.title == english.title or t.description == english.description)
        ]
        assert not copies, f"{entry.id}: English text copied into {copies}"
    assert not wrong, f"misdetected translations: {wrong}"


def test_field_labels_help_and_options_are_localized() -> None:
    for entry in CATALOG:
        for field in entry.template.fields:
            for texts in (field.labels, field.help):
                assert set(texts) == set(LANGUAGES)
                assert all(v.strip() for v in texts.values())
            for option in field.options or ():
                assert set(option.labels) == set(LANGUAGES)


def test_no_two_prompts_are_near_duplicates() -> None:
    prompts = {e.id: e.template.prompt for e in CATALOG}
    shingles = {k: _shingles(v) for k, v in prompts.items()}
    vectors = _tfidf(prompts)
    close = []
    for a, b in itertools.combinations(prompts, 2):
        jaccard = _jaccard(shingles[a], shingles[b])
        cosine = _cosine(vectors[a], vectors[b])
        if jaccard >= MAX_SHINGLE_JACCARD or cosine >= MAX_TFIDF_COSINE:
            close.append((a, b, round(jaccard, 2), round(cosine, 2)))
    assert not close, f"near-duplicate prompts: {close}"


def test_the_similarity_measures_do_flag_a_lightly_edited_copy() -> None:
    """Guards the test above against a measure that can never fire."""
    original = CATALOG.entries[IDS[0]].template.prompt
    words = original.split()
    edited = " ".join(w.upper() if i % 15 == 0 else w for i, w in enumerate(words))
    edited = edited.replace("the ", "a ", 3)
    assert _jaccard(_shingles(original), _shingles(edited)) >= MAX_SHINGLE_JACCARD
    other = CATALOG.entries[IDS[1]].template.prompt
    vectors = _tfidf({"a": original, "b": edited, "c": other})
    assert _cosine(vectors["a"], vectors["b"]) >= MAX_TFIDF_COSINE


def test_legal_templates_carry_the_legal_disclaimer() -> None:
    legal = [e for e in CATALOG if e.template.category == "legal"]
    assert legal and all(e.template.disclaimer == "legal" for e in legal)
    for style in CATALOG.styles.values():
        assert style.disclaimers.legal != CATALOG.styles["en"].disclaimers.legal or (
            style.language == "en"
        )
        found, _ = py3langid.classify(style.disclaimers.legal)
        assert found == style.language


def test_json_templates_have_object_schemas() -> None:
    json_templates = [e for e in CATALOG if e.template.output.format == "json"]
    assert len(json_templates) >= 10
    for entry in json_templates:
        schema = entry.template.output.json_schema or {}
        assert schema.get("type") == "object" and schema.get("required"), entry.id


def _copy_catalog(tmp_path: Path) -> tuple[Path, Path]:
    src = Path(str(resources.files("polymodal.templates")))
    root, styles = tmp_path / "catalog", tmp_path / "styles"
    (root / "legal").mkdir(parents=True)
    one = src / "catalog" / "legal" / "mutual-nda.yaml"
    (root / "legal" / "mutual-nda.yaml").write_text(one.read_text("utf-8"), "utf-8")
    styles.mkdir()
    for f in (src / "styles").iterdir():
        (styles / f.name).write_text(f.read_text("utf-8"), "utf-8")
    return root, styles


def test_a_broken_file_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    root, styles = _copy_catalog(tmp_path)
    good: Catalog = load_catalog(root, styles)
    assert list(good.entries) == ["mutual-nda"]

    path = root / "legal" / "mutual-nda.yaml"
    data = yaml.safe_load(path.read_text("utf-8"))
    data["prompt"] += "\n{{ undeclared_thing }}"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    with pytest.raises(CatalogError, match=r"mutual-nda\.yaml: .*undeclared_thing"):
        load_catalog(root, styles)

    data["prompt"] = data["prompt"].replace("{{ undeclared_thing }}", "")
    del data["i18n"]["ja"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    with pytest.raises(CatalogError, match=r"mutual-nda\.yaml: template\.i18n: .*ja"):
        load_catalog(root, styles)


def test_a_broken_style_guide_is_a_startup_error(tmp_path: Path) -> None:
    root, styles = _copy_catalog(tmp_path)
    data = yaml.safe_load((styles / "es.yaml").read_text("utf-8"))
    data["default_locale"] = "es-XX"
    (styles / "es.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    with pytest.raises(CatalogError, match=r"es\.yaml"):
        load_catalog(root, styles)
