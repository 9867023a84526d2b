"""Chatbot and semantic query cache metrics. Labels are fixed outcomes: bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ChatbotMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cache_lookups = Counter(
            "polymodal_semantic_cache_lookups_total",
            "Semantic query cache lookups by result: hit, miss, or guarded (a vector "
            "match that the number/negation/entity guard refused).",
            ["result"],
            registry=registry,
        )
        self.cache_saved = Counter(
            "polymodal_semantic_cache_saved_seconds_total",
            "Search time saved by semantic cache hits (original search time minus lookup).",
            registry=registry,
        )
        self.answers = Counter(
            "polymodal_chatbot_answers_total",
            "Chatbot answers by outcome: answered, not_in_kb (no model call), error.",
            ["outcome"],
            registry=registry,
        )
        self.summaries = Counter(
            "polymodal_chatbot_summaries_total",
            "Conversation summaries made because the history passed the token limit.",
            registry=registry,
        )

    def lookup(self, result: str, saved_s: float = 0.0) -> None:
        self.cache_lookups.labels(result).inc()
        if saved_s > 0:
            self.cache_saved.inc(saved_s)

    def answer(self, outcome: str) -> None:
        self.answers.labels(outcome).inc()

    def summary(self) -> None:
        self.summaries.inc()
