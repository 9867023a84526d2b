"""The knowledge-base API on a live server: CRUD, multipart upload, URL ingestion from a
loopback server, status, search, delete, and every kind of bad input as a clear 4xx
that leaves nothing behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fpdf import FPDF

from tests.live import LiveServer
from tests.setup_helpers import seed_tenants, sqlite_settings

KB = "/v1/knowledge-bases"
PAGE = (
    b"<html><head><title>Tide guide</title></head><body><h1>Tides</h1>"
    b"<p>Spring tides happen when the sun and the moon line up, twice a month.</p>"
    b"<script>alert('not text')</script></body></html>"
)


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect-to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Api:
    server: LiveServer
    dev_a: str
    viewer_a: str
    dev_b: str
    pages: str

    def client(self, key: str | None = None) -> httpx.Client:
        return self.server.client(key or self.dev_a, timeout=60)

    def drain(self) -> None:
        self.server.drain_ingestion()


PEOPLE = {
    "kb-a": [("dev@a.test", "developer"), ("viewer@a.test", "viewer")],
    "kb-b": [("dev@b.test", "developer")],
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp: Path = tmp_path_factory.mktemp("kb-api")
    pages = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    settings = sqlite_settings(
        tmp,
        "kb.db",
        usage_flush_interval_s=60,
        ingest_max_document_bytes=64 * 1024,
        fetch_allow_networks=["127.0.0.1/32"],  # the loopback page server only
    )
    keys = asyncio.run(seed_tenants(settings, PEOPLE)).keys
    try:
        with LiveServer(settings, {}) as server:
            yield Api(
                server,
                keys["dev@a.test"],
                keys["viewer@a.test"],
                keys["dev@b.test"],
                f"http://127.0.0.1:{pages.server_port}",
            )
    finally:
        pages.shutdown()


def _pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, text=text)
    return bytes(pdf.output())


def _error(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()["error"]
    return body


def test_knowledge_base_lifecycle(api: Api) -> None:
    with api.client() as c:
        r = c.post(KB, json={"name": "handbook", "description": "staff handbook"})
        assert r.status_code == 201, r.text
        kb = r.json()
        assert kb["embedding_model"] == "local-e5-small" and kb["version"] == 1
        leave = b"# Leave\n\nStaff get 25 days of paid leave a year."
        badge = _pdf("Lost badges are replaced at the front desk.")
        files = [
            ("file", ("leave.md", leave, "text/markdown")),
            ("file", ("rooms.csv", b"room,floor\nAtlas,3\nBoreal,5\n", "text/csv")),
            ("file", ("badge.pdf", badge, "application/pdf")),
        ]
        r = c.post(f"{KB}/{kb['id']}/documents", files=files)
        assert r.status_code == 202, r.text
        docs = r.json()["data"]
        assert [d["status"] for d in docs] == ["queued"] * 3
        r = c.post(f"{KB}/{kb['id']}/documents", json={"url": api.pages + "/tides.html"})
        assert r.status_code == 202, r.text
        assert r.json()["data"][0]["title"] == "Tide guide"
        api.drain()
        listed = c.get(f"{KB}/{kb['id']}/documents").json()["data"]
        assert {d["status"] for d in listed} == {"ready"} and len(listed) == 4
        pdf_doc = next(d for d in listed if d["format"] == "pdf")
        one = c.get(f"{KB}/{kb['id']}/documents/{pdf_doc['id']}").json()
        assert one["progress"] == 1.0 and one["chunks"] == one["chunks_done"] >= 1

        hits = c.post(
            f"{KB}/{kb['id']}/search", json={"query": "where are lost badges replaced?"}
        ).json()
        top = hits["data"][0]
        assert top["document_id"] == pdf_doc["id"] and top["page"] == 1
        assert "front desk" in top["text"]
        hits = c.post(f"{KB}/{kb['id']}/search", json={"query": "when are spring tides?"}).json()
        assert "moon" in hits["data"][0]["text"] and "alert" not in hits["data"][0]["text"]
        version = c.get(f"{KB}/{kb['id']}").json()["version"]
        assert hits["knowledge_base_versions"] == {kb["id"]: version} and version == 5

        # Re-uploading identical content changes nothing; new content replaces the chunks.
        same = c.post(f"{KB}/{kb['id']}/documents", files=[files[0]])
        assert same.status_code == 200 and same.json()["data"][0]["unchanged"] is True
        changed = (
            "file",
            ("leave.md", b"# Leave\n\nStaff get 30 days of paid leave.", "text/markdown"),
        )
        r = c.post(f"{KB}/{kb['id']}/documents", files=[changed])
        assert r.status_code == 202 and r.json()["data"][0]["id"] == docs[0]["id"]
        api.drain()
        hits = c.post(f"{KB}/{kb['id']}/search", json={"query": "days of paid leave", "top_k": 3})
        texts = [h["text"] for h in hits.json()["data"]]
        assert any("30 days" in t for t in texts) and not any("25 days" in t for t in texts)

        # Deleting a document removes it from search.
        assert c.delete(f"{KB}/{kb['id']}/documents/{pdf_doc['id']}").json()["deleted"] is True
        hits = c.post(f"{KB}/{kb['id']}/search", json={"query": "lost badge front desk"}).json()
        assert all(h["document_id"] != pdf_doc["id"] for h in hits["data"])
        assert c.get(f"{KB}/{kb['id']}/documents/{pdf_doc['id']}").status_code == 404

        renamed = c.patch(f"{KB}/{kb['id']}", json={"name": "handbook-2026"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "handbook-2026"
        assert c.delete(f"{KB}/{kb['id']}").status_code == 200
        assert c.get(f"{KB}/{kb['id']}").status_code == 404


def test_bad_input_is_a_clear_4xx_and_leaves_nothing(api: Api) -> None:
    with api.client() as c:
        kb = c.post(KB, json={"name": "strict"}).json()
        docs = f"{KB}/{kb['id']}/documents"

        r = c.post(docs, files=[("file", ("tool.exe", b"MZ\x90\x00", "application/octet-stream"))])
        assert r.status_code == 415 and "tool.exe" in _error(r)["message"]
        r = c.post(
            docs, files=[("file", ("broken.pdf", b"%PDF-1.7 not really", "application/pdf"))]
        )
        assert r.status_code == 422 and "broken.pdf" in _error(r)["message"]
        assert _error(r)["code"] == "corrupt_document"
        r = c.post(
            docs,
            files=[("file", ("broken.docx", b"PK\x03\x04garbage", "application/octet-stream"))],
        )
        assert r.status_code == 422 and "broken.docx" in _error(r)["message"]
        r = c.post(docs, files=[("file", ("blank.txt", b"   \n\n  ", "text/plain"))])
        assert r.status_code == 422 and _error(r)["code"] == "empty_document"
        r = c.post(docs, files=[("file", ("big.txt", b"word " * 20000, "text/plain"))])
        assert r.status_code == 413 and "big.txt" in _error(r)["message"]
        r = c.post(docs, files=[("file", ("bad.json", b"{not json", "application/json"))])
        assert r.status_code == 422 and "bad.json" in _error(r)["message"]
        # One bad file in a batch: nothing of the batch is stored.
        r = c.post(
            docs,
            files=[
                ("file", ("fine.txt", b"A perfectly good document.", "text/plain")),
                ("file", ("broken.pdf", b"%PDF garbage", "application/pdf")),
            ],
        )
        assert r.status_code == 422
        # SSRF: the metadata address, a redirect to it, a non-http scheme.
        r = c.post(docs, json={"url": "http://169.254.169.254/latest/meta-data/"})
        assert r.status_code == 422 and _error(r)["code"] == "url_refused"
        assert "metadata" in _error(r)["message"]
        r = c.post(docs, json={"url": api.pages + "/redirect-to-metadata"})
        assert r.status_code == 422 and _error(r)["code"] == "url_refused"
        r = c.post(docs, json={"url": "file:///etc/passwd"})
        assert r.status_code == 422 and "http" in _error(r)["message"]
        r = c.post(docs, content=b"raw", headers={"content-type": "text/plain"})
        assert r.status_code == 400
        assert c.get(docs).json()["data"] == []
        assert c.get(f"{KB}/{kb['id']}").json()["version"] == 1

        # Duplicate content under another name is refused, naming the first document.
        first = c.post(docs, files=[("file", ("a.txt", b"Same words here.", "text/plain"))])
        assert first.status_code == 202
        r = c.post(docs, files=[("file", ("b.txt", b"Same words here.", "text/plain"))])
        assert r.status_code == 409 and first.json()["data"][0]["id"] in _error(r)["message"]

        r = c.post(f"{KB}/{kb['id']}/search", json={"query": ""})
        assert r.status_code == 422
        r = c.post(KB, json={"name": "strict"})
        assert r.status_code == 409
        r = c.post(KB, json={"name": "x", "embedding_model": "no-such-model"})
        assert r.status_code == 404 and "no-such-model" in _error(r)["message"]
        api.drain()


def test_tenants_and_roles(api: Api) -> None:
    with api.client() as a:
        kb = a.post(KB, json={"name": "private"}).json()
        a.post(
            f"{KB}/{kb['id']}/documents",
            files=[("file", ("s.txt", b"The vault code is 4411.", "text/plain"))],
        )
    api.drain()
    with api.client(api.dev_b) as b:
        for r in (
            b.get(f"{KB}/{kb['id']}"),
            b.get(f"{KB}/{kb['id']}/documents"),
            b.post(f"{KB}/{kb['id']}/search", json={"query": "vault code"}),
            b.post(f"{KB}/{kb['id']}/documents", files=[("file", ("x.txt", b"hi", "text/plain"))]),
            b.delete(f"{KB}/{kb['id']}"),
        ):
            assert r.status_code == 404 and kb["id"] in _error(r)["message"], r.text
        assert all(k["id"] != kb["id"] for k in b.get(KB).json()["data"])
    with api.client(api.viewer_a) as v:
        assert v.post(f"{KB}/{kb['id']}/search", json={"query": "vault code"}).status_code == 200
        r = v.post(f"{KB}/{kb['id']}/documents", files=[("file", ("y.txt", b"hi", "text/plain"))])
        assert r.status_code == 403 and "kb:write" in _error(r)["message"]
        assert v.delete(f"{KB}/{kb['id']}").status_code == 403
