"""Every supported format parses into sections with their page or heading path; corrupt,
empty, oversized and unsupported files are refused by name."""

from __future__ import annotations

import io
import zipfile

import docx
import pytest
from fpdf import FPDF

from polymodal.rag.errors import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    UnsupportedDocument,
)
from polymodal.rag.parsers import detect_format, parse

LIMIT = 1_000_000


def _parse(data: bytes, name: str, limit: int = LIMIT):  # type: ignore[no-untyped-def]
    return parse(data, filename=name, fmt=detect_format(name, None), max_chars=limit)


def test_txt_utf8_utf16_and_cp1252() -> None:
    assert _parse("héllo wörld".encode(), "a.txt").text == "héllo wörld"
    assert _parse("ünïcode".encode("utf-16"), "a.txt").text == "ünïcode"
    assert _parse("caf\xe9".encode("cp1252"), "a.txt").text == "café"


def test_markdown_sections_follow_headings() -> None:
    doc = _parse(b"# Guide\n\nIntro.\n\n## Setup\n\nInstall.\n\n```\n# not a heading\n```", "g.md")
    assert doc.title == "Guide"
    assert [(s.section, s.text.split("\n")[0]) for s in doc.sections] == [
        ("Guide", "Guide"),
        ("Guide > Setup", "Setup"),
    ]
    assert "# not a heading" in doc.sections[1].text


def test_html_drops_scripts_and_keeps_headings() -> None:
    html = (
        b"<html><head><title>Page</title><style>p{}</style></head><body><nav>menu</nav>"
        b"<h1>One</h1><p>First <b>bold</b> para.</p><script>evil()</script>"
        b"<h2>Two</h2><ul><li>a</li><li>b</li></ul><table><tr><td>x</td><td>y</td></tr></table>"
        b"</body></html>"
    )
    doc = _parse(html, "p.html")
    assert doc.title == "Page"
    assert "evil" not in doc.text and "p{}" not in doc.text
    assert "First bold para." in doc.text
    assert [s.section for s in doc.sections] == ["One", "One > Two"]
    assert "x | y" in doc.sections[-1].text


def test_pdf_pages() -> None:
    pdf = FPDF()
    for text in ("Alpha page text.", "Beta page text."):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.cell(text=text)
    doc = _parse(bytes(pdf.output()), "two.pdf")
    assert [(s.page, s.text) for s in doc.sections] == [
        (1, "Alpha page text."),
        (2, "Beta page text."),
    ]


def test_docx_headings_paragraphs_and_tables() -> None:
    d = docx.Document()
    d.add_heading("Policy", 1)
    d.add_paragraph("Everyone may work remotely.")
    d.add_heading("Equipment", 2)
    table = d.add_table(rows=1, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "laptop", "yes"
    buf = io.BytesIO()
    d.save(buf)
    doc = _parse(buf.getvalue(), "policy.docx")
    assert doc.title == "Policy"
    assert doc.sections[0].text == "Policy\n\nEveryone may work remotely."
    assert doc.sections[1].section == "Policy > Equipment"
    assert "laptop | yes" in doc.sections[1].text


def test_csv_rows_keep_their_column_names() -> None:
    doc = _parse(b"city;country\nLyon;France\nPorto;Portugal\n", "c.csv")
    assert doc.text == "city: Lyon; country: France\ncity: Porto; country: Portugal"


def test_json_flattens_to_paths() -> None:
    doc = _parse(b'{"faq": [{"q": "Hours?", "a": "9-5"}], "empty": ""}', "f.json")
    assert doc.text == "faq[0].q: Hours?\nfaq[0].a: 9-5"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("bad.pdf", b"%PDF-1.4\n garbage"),
        ("bad.docx", b"PK\x03\x04 not a zip"),
        ("bad.json", b'{"a": '),
        ("bin.txt", "abc\x00def".encode("utf-16-le")),
    ],
)
def test_corrupt_files_are_refused_by_name(name: str, data: bytes) -> None:
    with pytest.raises(CorruptDocument) as e:
        _parse(data, name)
    assert e.value.status == 422 and ("file:" in e.value.message)
    assert name in e.value.message or "binary" in e.value.message


def test_docx_that_is_a_zip_of_something_else_is_corrupt() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "not a word document")
    with pytest.raises(CorruptDocument, match=r"notword\.docx"):
        _parse(buf.getvalue(), "notword.docx")


def test_docx_zip_bomb_is_refused_before_inflating() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"0" * (80 * 1024 * 1024))
    assert len(buf.getvalue()) < 1024 * 1024
    with pytest.raises(DocumentTooLarge):
        _parse(buf.getvalue(), "bomb.docx", limit=1000)


@pytest.mark.parametrize(
    ("name", "data"),
    [("e.txt", b"  \n\t\n"), ("e.md", b"\n\n"), ("e.csv", b"\n,\n"), ("e.json", b"{}")],
)
def test_empty_documents_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(EmptyDocument, match=name):
        _parse(data, name)


def test_text_over_the_limit_is_refused() -> None:
    with pytest.raises(DocumentTooLarge, match="limit is 100"):
        _parse(b"x" * 101, "long.txt", limit=100)


def test_format_from_extension_then_media_type() -> None:
    assert detect_format("notes.MARKDOWN", None) == "md"
    assert detect_format("download", "application/pdf; charset=binary") == "pdf"
    with pytest.raises(UnsupportedDocument) as e:
        detect_format("movie.mp4", "video/mp4")
    assert e.value.status == 415 and "movie.mp4" in e.value.message and "'.mp4'" in e.value.message
