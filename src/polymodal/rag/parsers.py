"""Documents -> text sections: txt, md, html, pdf, docx, csv, json.

Parsing happens when a document arrives (upload or URL), so a corrupt, empty or
unsupported file is refused with a 4xx before anything is stored or queued. Each
section keeps where it came from: the page (pdf) or the heading path (md, html, docx).
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from polymodal.rag.errors import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    UnsupportedDocument,
)

FORMATS = ("txt", "md", "html", "pdf", "docx", "csv", "json")
_EXTENSIONS = {
    "txt": "txt",
    "text": "txt",
    "md": "md",
    "markdown": "md",
    "html": "html",
    "htm": "html",
    "pdf": "pdf",
    "docx": "docx",
    "csv": "csv",
    "json": "json",
}
_MEDIA_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/csv": "csv",
    "application/json": "json",
}
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")


@dataclass(frozen=True, slots=True)
class Section:
    text: str
    page: int | None = None
    section: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    format: str
    title: str
    sections: list[Section]

    @property
    def text(self) -> str:
        return SEPARATOR.join(s.text for s in self.sections)


SEPARATOR = "\n\n"  # between sections in the document's full text (offsets count it)


def detect_format(filename: str, content_type: str | None) -> str:
    """The format from the file extension, else from the media type; 415 otherwise."""
    suffix = PurePosixPath(filename or "").suffix.lower().lstrip(".")
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _MEDIA_TYPES:
        return _MEDIA_TYPES[media]
    shown = f"'.{suffix}'" if suffix else f"media type '{media or 'unknown'}'"
    raise UnsupportedDocument(
        f"file: {filename or 'document'} has unsupported type {shown}; "
        f"supported: {', '.join(FORMATS)}."
    )


def parse(data: bytes, *, filename: str, fmt: str, max_chars: int) -> ParsedDocument:
    """Parse ``data`` of format ``fmt``; raises a 4xx error naming ``filename``."""
    parser = _PARSERS[fmt]
    try:
        title, sections = parser(data, max_chars)
    except (CorruptDocument, DocumentTooLarge, EmptyDocument):
        raise
    except Exception as e:  # every parser library has its own exceptions
        raise CorruptDocument(
            f"file: {filename} is not a readable {fmt} file ({type(e).__name__}).",
            param="file",
        ) from e
    cleaned = [Section(_tidy(s.text), s.page, s.section) for s in sections if _tidy(s.text)]
    total = sum(len(s.text) for s in cleaned)
    if total > max_chars:
        raise DocumentTooLarge(
            f"file: {filename} holds {total} characters of text; the limit is {max_chars}."
        )
    if not cleaned:
        raise EmptyDocument(f"file: {filename} contains no text to index.", param="file")
    name = PurePosixPath(filename).stem if filename else ""
    return ParsedDocument(format=fmt, title=(title or name).strip()[:500], sections=cleaned)


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="strict")
    if "\x00" in text:
        raise CorruptDocument("file: binary content where text was expected.", param="file")
    return text


def _txt(data: bytes, _max: int) -> tuple[str, list[Section]]:
    return "", [Section(_decode(data))]


def _markdown_sections(text: str) -> tuple[str, list[Section]]:
    """Split at headings; each section carries its heading path ("A > B")."""
    path: list[tuple[int, str]] = []
    sections: list[Section] = []
    buf: list[str] = []
    title = ""
    in_fence = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(body, None, " > ".join(t for _, t in path) or None))
        buf.clear()

    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2).strip()
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, heading)]
            title = title or heading
            buf.append(heading)  # headings are searchable text too
        else:
            buf.append(line)
    flush()
    return title, sections


def _md(data: bytes, _max: int) -> tuple[str, list[Section]]:
    return _markdown_sections(_decode(data))


_SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "svg", "head", "iframe", "nav"}
)  # code, styling and site navigation are not the document
_BLOCK_TAGS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "nav",
        "ul", "ol", "li", "table", "tr", "blockquote", "pre", "br", "hr", "dl", "dt",
        "dd", "figure", "figcaption", "form", "address",
    }
)  # fmt: skip


def _html(data: bytes, _max: int) -> tuple[str, list[Section]]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(data.decode("utf-8", errors="replace"))
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    root = tree.body or tree.root
    if root is None:
        return title, []
    out: list[str] = []

    def walk(node: Any) -> None:
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                out.append(child.text_content or "")
            elif tag in _SKIP_TAGS or tag == "-comment":
                continue
            elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                heading = " ".join(child.text(separator=" ").split())
                if heading:
                    out.append(f"\n\n{'#' * int(tag[1])} {heading}\n\n")
            elif tag in ("td", "th"):
                walk(child)
                out.append(" | ")
            elif tag in _BLOCK_TAGS:
                out.append("\n")
                walk(child)
                out.append("\n")
            else:
                walk(child)

    walk(root)
    text = "".join(out)
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    md_title, sections = _markdown_sections(text)
    return title or md_title, sections


def _pdf(data: bytes, _max: int) -> tuple[str, list[Section]]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted and not reader.decrypt(""):
        raise CorruptDocument("file: the pdf is encrypted with a password.", param="file")
    meta = reader.metadata
    title = str(meta.title or "") if meta is not None else ""
    sections = [
        Section(page.extract_text() or "", page=i + 1) for i, page in enumerate(reader.pages)
    ]
    return title, sections


def _docx(data: bytes, max_chars: int) -> tuple[str, list[Section]]:
    import docx

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        # A zip bomb expands to gigabytes: refuse it before python-docx inflates it.
        unpacked = sum(i.file_size for i in z.infolist())
        if unpacked > max(64 * 1024 * 1024, max_chars * 16):
            raise DocumentTooLarge(f"file: the docx unpacks to {unpacked} bytes; refused.")
    document = docx.Document(io.BytesIO(data))
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            for row in block.rows:
                lines.append(" | ".join(c.text.strip() for c in row.cells))
            lines.append("")
            continue
        style = (block.style.name if block.style is not None else "") or ""
        text = block.text.strip()
        if style.startswith("Heading") and text:
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            lines.append(f"{'#' * min(level, 6)} {text}")
        elif style == "Title" and text:
            lines.append(f"# {text}")
        else:
            lines.append(text)
        lines.append("")
    md_title, sections = _markdown_sections("\n".join(lines))
    return str(document.core_properties.title or "") or md_title, sections


def _csv(data: bytes, _max: int) -> tuple[str, list[Section]]:
    text = _decode(data)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return "", []
    header, body = rows[0], rows[1:]
    if not body:
        return "", [Section(" | ".join(header))]
    # One line per row, "column: value", so a chunk of rows still says what each value is.
    lines = [
        "; ".join(
            f"{h.strip() or f'col{i + 1}'}: {v.strip()}"
            for i, (h, v) in enumerate(zip(header, r, strict=False))
            if v.strip()
        )
        for r in body
    ]
    return "", [Section("\n".join(lines))]


def _json(data: bytes, _max: int) -> tuple[str, list[Section]]:
    value = json.loads(_decode(data))
    lines: list[str] = []

    def walk(v: Any, path: str) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                walk(item, f"{path}.{k}" if path else str(k))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                walk(item, f"{path}[{i}]")
        elif v is not None and v != "":
            lines.append(f"{path}: {v}" if path else str(v))

    walk(value, "")
    return "", [Section("\n".join(lines))]


_PARSERS: dict[str, Callable[[bytes, int], tuple[str, list[Section]]]] = {
    "txt": _txt,
    "md": _md,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "csv": _csv,
    "json": _json,
}
