"""Errors of knowledge bases that the API shows as 4xx: each names what was wrong."""

from __future__ import annotations

from polymodal.domain.errors import InvalidRequest, PayloadTooLarge, ValidationFailed


class UnsupportedDocument(InvalidRequest):
    """A file whose format ingestion does not read (415)."""

    status = 415
    code = "unsupported_document_type"


class CorruptDocument(ValidationFailed):
    """A file of a supported format that does not parse."""

    code = "corrupt_document"


class EmptyDocument(ValidationFailed):
    """A file that parses but holds no text to index."""

    code = "empty_document"


class DocumentTooLarge(PayloadTooLarge):
    code = "document_too_large"


class DuplicateDocument(InvalidRequest):
    """The same content is already in the knowledge base under another source (409)."""

    status = 409
    code = "duplicate_document"


class UrlRefused(ValidationFailed):
    """The SSRF guard refused a URL (or a redirect it led to)."""

    code = "url_refused"


class FetchFailed(ValidationFailed):
    """The URL was allowed but could not be fetched (status, timeout, connection)."""

    code = "url_fetch_failed"
