"""The README's configuration reference is the one generated from the Settings model."""

from __future__ import annotations

from pathlib import Path

from polymodal.settings import settings_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- config:begin -->"
END = "<!-- config:end -->"


def test_configuration_table_matches_settings() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "README lacks the generated configuration block"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == settings_markdown().strip(), (
        "README configuration reference is out of date: run `make docs`"
    )


def test_quick_start_is_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    fence = quick.split("```", 2)[1]
    commands = [line for line in fence.splitlines()[1:] if line.strip()]
    assert commands == ["make serve", "make test"]
