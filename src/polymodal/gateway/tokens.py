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


# The planner and the classifier count the same messages one after the other: the second
# count is a lookup. Small and bounded (64 texts of at most 64 KB).
_RECENT: dict[str, int] = {}
_RECENT_MAX, _RECENT_CHARS = 64, 65_536


def count_tokens(text: str) -> int:
    if not text:
        return 0
    n = _RECENT.get(text)
    if n is None:
        n = int(_encoding().count(text))
        if len(text) <= _RECENT_CHARS:
            if len(_RECENT) >= _RECENT_MAX:
                _RECENT.clear()
            _RECENT[text] = n
    return n


def warm_up() -> None:
    """Load the vocabulary now (about a second) instead of on the first request."""
    _encoding()
