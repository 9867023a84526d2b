"""Ingestion through the in-process runner, then hybrid search over what was ingested."""

from __future__ import annotations

from tests.rag.conftest import Rag

DOCS = {
    "volcano.md": "# Volcanoes\n\nA volcano is a rupture in the crust of a planet where lava, "
    "volcanic ash and gases escape from a magma chamber below the surface.\n\n"
    "## Eruptions\n\nMount Vesuvius erupted in 79 AD and buried Pompeii under ash.",
    "bread.txt": "Bread is baked from flour, water and yeast. Sourdough uses a starter of wild "
    "yeast and lactic acid bacteria instead of commercial yeast.",
    "chess.txt": "In chess, castling moves the king two squares towards a rook, and the rook "
    "jumps over the king. It is the only move in which two pieces move at once.",
}


async def test_upload_ingest_and_search(rag: Rag) -> None:
    p = await rag.tenant()
    kb = await rag.service.create_kb(p, name="facts")
    assert kb.embedding_model == "local-e5-small" and kb.dimensions == 384 and kb.version == 1
    for name, text in DOCS.items():
        doc = await rag.service.add_upload(
            p, kb.id, filename=name, content_type=None, data=text.encode()
        )
        assert doc.status == "queued"
    await rag.runner.drain()
    docs = await rag.service.list_documents(p, kb.id)
    assert {d.status for d in docs} == {"ready"}
    assert all(d.chunks >= 1 and d.progress == 1.0 for d in docs)
    after = await rag.service.get_kb(p, kb.id)
    assert after.version == 1 + len(DOCS)

    result = await rag.service.search(p, [kb.id], query="which city was buried by ash?")
    top = result.hits[0]
    assert "Pompeii" in top.text and top.section is not None and "Volcanoes" in top.section
    assert top.dense_score is not None and top.dense_score > 0.5
    assert result.kb_versions == {kb.id: after.version}
    result = await rag.service.search(p, [kb.id], query="wild yeast starter", mode="bm25")
    assert "Sourdough" in result.hits[0].text


async def test_a_knowledge_base_on_local_minilm(rag: Rag) -> None:
    """The optional English MiniLM model as a knowledge base's embedding model: its own
    collection (same dimensions as e5, other vectors), chunks sized for its 256 tokens."""
    p = await rag.tenant()
    kb = await rag.service.create_kb(p, name="facts-minilm", embedding_model="local-minilm")
    assert kb.embedding_model == "local-minilm" and kb.dimensions == 384
    long_text = "\n\n".join(DOCS.values()) * 6  # over 256 tokens: several chunks
    await rag.service.add_upload(
        p, kb.id, filename="all.txt", content_type=None, data=long_text.encode()
    )
    await rag.runner.drain()
    [doc] = await rag.service.list_documents(p, kb.id)
    assert doc.status == "ready" and doc.chunks > 1
    result = await rag.service.search(p, [kb.id], query="which city was buried by ash?")
    assert "Pompeii" in result.hits[0].text
