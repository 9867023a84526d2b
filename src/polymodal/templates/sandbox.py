"""The Jinja2 sandbox templates render in, and the save-time safety check of template
sources.

Two lines of defence: Jinja2's ``SandboxedEnvironment`` refuses unsafe attribute access
and calls at render time; before a tenant's template is saved, its source is parsed and
refused if it fails to compile, reaches for private or dunder attributes, imports,
includes or extends other templates, or names a variable that is not one of its fields.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

MAX_SOURCE_CHARS = 20_000  # a prompt template longer than this is a mistake, not a prompt
MAX_RENDERED_CHARS = 100_000  # a rendered prompt past this would not fit any context window
COMPILED_CACHE_SIZE = 1024  # compiled sources kept per process (built-ins are ~300)
# A tenant's template renders on the event loop: past this it is stopped, not awaited.
# Built-ins render in well under a millisecond; a prompt needing 100 ms is a loop bomb.
CUSTOM_RENDER_LIMIT_S = 0.1
_TRACE_CHECK_EVERY = 256  # trace events between clock reads (a read costs ~50 ns)
MAX_REPEAT = 10_000  # the largest right operand of "*" on text or lists, and of "**"

# Attribute names that reach interpreter internals even without a leading underscore.
_FORBIDDEN_ATTRS = frozenset(
    {
        "mro",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "f_globals",
        "f_locals",
        "f_builtins",
        "func_globals",
        "func_code",
        "im_func",
        "im_self",
        "tb_frame",
    }
)
_FORBIDDEN_FILTERS = frozenset({"attr"})  # attribute access by computed name
# Filters that look attributes up by a name given as an argument.
_ATTRIBUTE_FILTERS = frozenset(
    {"map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)
_FORBIDDEN_STATEMENTS: dict[type[nodes.Node], str] = {
    nodes.Import: "'import' is not allowed",
    nodes.FromImport: "'from ... import' is not allowed",
    nodes.Include: "'include' is not allowed",
    nodes.Extends: "'extends' is not allowed",
}


class TemplateSourceError(ValueError):
    """A template source is unusable; ``message`` says why, with the line when known."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class TemplateRenderError(ValueError):
    """Rendering failed at run time (a sandbox violation or a missing variable)."""


class _Environment(SandboxedEnvironment):
    """Jinja's sandbox, plus bounds on the two operators that can allocate without a
    loop: ``"x" * 10**9`` and ``9 ** 9 ** 9`` (intercepting them also stops the
    compiler from folding them as constants at save time)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > MAX_REPEAT:
                raise SecurityError(f"an exponent above {MAX_REPEAT} is not allowed")
            return left**right
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if sized and len(seq) * times > MAX_RENDERED_CHARS:
                raise SecurityError("repeating a value this many times is not allowed")
        return left * right


def _environment() -> SandboxedEnvironment:
    env = _Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.globals.pop("lipsum", None)  # random filler text has no place in a prompt
    return env


ENV = _environment()


def _private(name: object) -> bool:
    return isinstance(name, str) and (name.startswith("_") or name in _FORBIDDEN_ATTRS)


def _const_args(node: nodes.Filter | nodes.Test) -> Iterable[object]:
    for arg in node.args:
        if isinstance(arg, nodes.Const):
            yield arg.value
    for kw in node.kwargs:
        if isinstance(kw.value, nodes.Const):
            yield kw.value.value


def check_source(source: str, *, variables: Iterable[str]) -> None:
    """Refuse a template source that is unsafe, does not compile, or uses variables other
    than ``variables`` (the template's field names). Raises ``TemplateSourceError``."""
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateSourceError(f"longer than {MAX_SOURCE_CHARS} characters")
    try:
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateSourceError(f"Jinja2 syntax error: {e.message}", line=e.lineno) from e
    for node in ast.find_all(nodes.Node):
        line = getattr(node, "lineno", None)
        for kind, why in _FORBIDDEN_STATEMENTS.items():
            if isinstance(node, kind):
                raise TemplateSourceError(why, line=line)
        if isinstance(node, nodes.Getattr) and _private(node.attr):
            raise TemplateSourceError(
                f"access to attribute {node.attr!r} is not allowed", line=line
            )
        if (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and _private(node.arg.value)
        ):
            raise TemplateSourceError(
                f"access to item {node.arg.value!r} is not allowed", line=line
            )
        if isinstance(node, nodes.Filter | nodes.Test):
            if node.name in _FORBIDDEN_FILTERS:
                raise TemplateSourceError(f"the '{node.name}' filter is not allowed", line=line)
            for value in _const_args(node) if node.name in _ATTRIBUTE_FILTERS else ():
                if _private(value):
                    raise TemplateSourceError(
                        f"the argument {value!r} of '{node.name}' is not allowed", line=line
                    )
    try:
        # Code generation catches what parsing does not (unknown filters and tests); the
        # compiled template is kept for rendering, so a source is parsed once per process.
        _remember(source, ENV.template_class.from_code(ENV, ENV.compile(ast), ENV.globals))
    except jinja2.TemplateError as e:
        line = getattr(e, "lineno", None)
        raise TemplateSourceError(f"does not compile: {e}", line=line) from e
    # A name set anywhere in the template counts as declared: Jinja reports a variable
    # set inside an {% if %} branch as undeclared, though the template defines it.
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    undeclared = meta.find_undeclared_variables(ast) - set(variables) - set(ENV.globals) - assigned
    if undeclared:
        names = ", ".join(repr(n) for n in sorted(undeclared))
        raise TemplateSourceError(f"undeclared variable {names} (not one of the fields)")


_COMPILED: OrderedDict[str, jinja2.Template] = OrderedDict()


def _remember(source: str, template: jinja2.Template) -> jinja2.Template:
    _COMPILED[source] = template
    _COMPILED.move_to_end(source)
    while len(_COMPILED) > COMPILED_CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return template


def compiled(source: str) -> jinja2.Template:
    found = _COMPILED.get(source)
    if found is not None:
        _COMPILED.move_to_end(source)
        return found
    return _remember(source, ENV.from_string(source))


class RenderTimeLimit(Exception):
    """Raised inside a render that ran past its limit (by the trace function)."""


def _render_limited(template: jinja2.Template, context: Mapping[str, Any], limit_s: float) -> str:
    """Render with a wall-clock limit. Jinja compiles to Python, so a trace function
    sees every line a template (and the filters it calls) runs, including loops that
    emit nothing; it reads the clock every few hundred events and stops the render."""
    deadline = time.monotonic() + limit_s
    events = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal events
        events += 1
        if events % _TRACE_CHECK_EVERY == 0 and time.monotonic() > deadline:
            raise RenderTimeLimit(f"the template ran longer than {limit_s * 1000:.0f} ms")
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        return template.render(**context)
    finally:
        sys.settrace(previous)


def render(source: str, context: Mapping[str, Any], *, limit_s: float | None = None) -> str:
    """Render ``source``; ``limit_s`` bounds the time of an untrusted (tenant) source."""
    try:
        template = compiled(source)
        if limit_s is None:
            text = template.render(**context)
        else:
            text = _render_limited(template, context, limit_s)
    except Exception as e:  # a tenant's template may fail any way Python can (1 + "x")
        raise TemplateRenderError(f"{type(e).__name__}: {e}") from e
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateRenderError(f"the rendered text is longer than {MAX_RENDERED_CHARS} chars")
    return text.strip()
