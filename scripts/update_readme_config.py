"""Rewrite the README's configuration block from the Settings model (`make docs`)."""

from __future__ import annotations

from pathlib import Path

from polymodal.settings import settings_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- config:begin -->", "<!-- config:end -->"

text = README.read_text(encoding="utf-8")
head, rest = text.split(BEGIN, 1)
_, tail = rest.split(END, 1)
README.write_text(f"{head}{BEGIN}\n{settings_markdown()}{END}{tail}", encoding="utf-8")
print(f"updated {README}")
