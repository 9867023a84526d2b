"""Test doubles for polymodal.

:mod:`polymodal.testing.fake_provider` serves fake model providers (OpenAI,
Anthropic, Gemini, Cohere) as real loopback HTTP servers that speak each
provider's wire format, reply deterministically and inject faults on demand.
"""

from polymodal.testing.fakes.core import Faults, Reply, ToolCall
from polymodal.testing.fakes.server import FakeProvider, RefusedPort, create_app

__all__ = ["FakeProvider", "Faults", "RefusedPort", "Reply", "ToolCall", "create_app"]
