"""The built-in catalog: every ``catalog/<category>/<id>.yaml`` and every style guide,
loaded and checked once per process at start-up. A broken file stops start-up with an
error that names it."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable

import yaml
from pydantic import ValidationError

from polymodal.domain.errors import ValidationFailed
from polymodal.templates import search
from polymodal.templates.definitions import RESERVED_IDS, validate_definition
from polymodal.templates.schema import CATEGORIES, LANGUAGES, Template
from polymodal.templates.styles import StyleGuide

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in: ~10x faster


class CatalogError(Exception):
    """A built-in template or style guide is invalid; the message starts with its path."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A template as served: where it comes from and its search document."""

    template: Template
    source: str  # "builtin" | "custom"
    doc: search.SearchDoc = field(repr=False)

    @classmethod
    def of(cls, template: Template, source: str) -> Entry:
        return cls(template, source, search.document(template))

    @property
    def id(self) -> str:
        return self.template.id


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: dict[str, Entry]  # in catalog order: category order, then id
    styles: dict[str, StyleGuide]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, template_id: str) -> Entry | None:
        return self.entries.get(template_id)

    @property
    def tags(self) -> set[str]:
        return {tag for e in self for tag in e.template.tags}


def _read(path: Traversable) -> object:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as e:
        raise CatalogError(f"{path}: not valid YAML: {e}") from e


def load_styles(root: Traversable) -> dict[str, StyleGuide]:
    styles: dict[str, StyleGuide] = {}
    for lang in LANGUAGES:
        path = root / f"{lang}.yaml"
        if not path.is_file():
            raise CatalogError(f"{path}: missing style guide for {lang!r}")
        try:
            style = StyleGuide.model_validate(_read(path))
        except ValidationError as e:
            raise CatalogError(f"{path}: {e}") from e
        if style.language != lang:
            raise CatalogError(f"{path}: says language {style.language!r}")
        styles[lang] = style
    return styles


def load_catalog(root: Traversable, styles_root: Traversable) -> Catalog:
    """Load and check every template under ``root`` (one folder per category)."""
    found: list[Template] = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir() or folder.name.startswith(("_", ".")):
            continue
        if folder.name not in CATEGORIES:
            raise CatalogError(f"{folder}: not a category ({', '.join(CATEGORIES)})")
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if not path.name.endswith(".yaml"):
                continue
            found.append(_load_one(path, folder.name))
    by_id: dict[str, Template] = {}
    for template in found:
        if template.id in by_id:
            raise CatalogError(f"{root}: two templates have the id {template.id!r}")
        by_id[template.id] = template
    order = {c: i for i, c in enumerate(CATEGORIES)}
    ordered = sorted(by_id.values(), key=lambda t: (order[t.category], t.id))
    return Catalog(
        entries={t.id: Entry.of(t, "builtin") for t in ordered}, styles=load_styles(styles_root)
    )


def _load_one(path: Traversable, category: str) -> Template:
    try:
        template = validate_definition(_read(path), where="template")
    except ValidationFailed as e:
        raise CatalogError(f"{path}: {e.message}") from e
    stem = path.name.removesuffix(".yaml")
    if template.id != stem:
        raise CatalogError(f"{path}: id {template.id!r} differs from the file name")
    if template.category != category:
        raise CatalogError(f"{path}: category {template.category!r} differs from its folder")
    if template.id in RESERVED_IDS:
        raise CatalogError(f"{path}: the id {template.id!r} is reserved")
    return template


@functools.cache
def builtin_catalog() -> Catalog:
    """The shipped catalog, loaded once per process."""
    package = resources.files("polymodal.templates")
    return load_catalog(package / "catalog", package / "styles")
