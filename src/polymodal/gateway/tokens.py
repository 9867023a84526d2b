"""Token estimates for requests before they reach a provider (context-window checks,
usage when a provider reports none). OpenAI's o200k_base via quicktok, which ships its
vocabularies (plain tiktoken downloads them at run time and fails offline). For other
model families it is an estimate, which is all these checks need."""

from __future__ import annotations

from functools import cache
from typing import Any

import quicktok  # type: ignore[import-untyped]

ENCODING = "o200k_base"


@cache
def _encoding() -> Any:
    return quicktok.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    if not text:
        return 0
    return int(_encoding().count(text))


def warm_up() -> None:
    """Load the vocabulary now (about a second) instead of on the first request."""
    _encoding()
