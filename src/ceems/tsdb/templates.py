"""CEEMS' query templates: Go-template `{{.Name}}` placeholders, checked when compiled.

Only plain placeholders are supported, not Go's template language (no pipelines, functions
or conditionals): a template using anything else, or a name not in the allowed set, is
refused when compiled, so a typo fails at config load and not in the middle of an update.

A placeholder inside a double- or single-quoted PromQL string gets its backslashes doubled
when rendered, so a regex-escaped value (`a\\.b`) means the same inside `"..."` as inside
a raw backtick string.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PLACEHOLDER = re.compile(r"\s*\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*")
LABEL_PREFIX = "Labels."


class TemplateError(ValueError):
    """A query template uses an unknown placeholder or unsupported template syntax."""


@dataclass(frozen=True, slots=True)
class _Slot:
    name: str
    quote: str  # the PromQL string literal the placeholder sits in: "", '"', "'" or "`"


@dataclass(frozen=True, slots=True)
class QueryTemplate:
    """A compiled template: literal text and placeholders, each with its quoting."""

    source: str
    parts: tuple[str | _Slot, ...]

    @property
    def names(self) -> frozenset[str]:
        """Every placeholder name the template uses (`UUIDs`, `Labels.provider`, ...)."""
        return frozenset(p.name for p in self.parts if isinstance(p, _Slot))

    @property
    def labels(self) -> frozenset[str]:
        """The label names of `{{.Labels.<name>}}` placeholders."""
        return frozenset(n.removeprefix(LABEL_PREFIX) for n in self.names if _is_label(n))

    def render(self, values: Mapping[str, str]) -> str:
        """The text with each placeholder replaced by its value."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.name not in values:
                raise TemplateError(f"no value for placeholder {{{{.{part.name}}}}}")
            value = values[part.name]
            if part.quote in ('"', "'"):
                value = value.replace("\\", "\\\\").replace(part.quote, "\\" + part.quote)
            elif part.quote == "`" and "`" in value:
                raise TemplateError(
                    f"value {value!r} of {{{{.{part.name}}}}} cannot go in a `raw string`"
                )
            out.append(value)
        return "".join(out)


def _is_label(name: str) -> bool:
    return name.startswith(LABEL_PREFIX)


def compile_template(
    source: str, allowed: Collection[str], *, labels: bool = False
) -> QueryTemplate:
    """Parse `source`; placeholders must be in `allowed` (or `Labels.<name>` if `labels`)."""
    parts: list[str | _Slot] = []
    quote = ""
    literal_start = 0
    index = 0
    while index < len(source):
        if source.startswith("{{", index):
            match = _ACTION.match(source, index)
            if match is None:
                raise TemplateError(f"unclosed '{{{{' at offset {index} in {source!r}")
            name = _slot_name(match.group(0), match.group(1), allowed, labels=labels)
            parts.append(source[literal_start:index])
            parts.append(_Slot(name, quote))
            index = literal_start = match.end()
            continue
        char = source[index]
        if not quote and char in "\"'`":
            quote = char
        elif quote in ('"', "'") and char == "\\":
            index += 1  # an escaped character never closes the string
        elif char == quote:
            quote = ""
        index += 1
    parts.append(source[literal_start:])
    return QueryTemplate(source, tuple(p for p in parts if p != ""))


def _slot_name(action: str, inner: str, allowed: Collection[str], *, labels: bool) -> str:
    known = sorted(allowed) + ([f"{LABEL_PREFIX}<label>"] if labels else [])
    match = _PLACEHOLDER.fullmatch(inner)
    if match is None:
        raise TemplateError(
            f"unsupported template action {action}: only {{{{.Name}}}} placeholders are "
            f"supported (known: {', '.join(known) or 'none'})"
        )
    name = match.group(1)
    if name in allowed or (labels and _is_label(name)):
        return name
    raise TemplateError(f"unknown placeholder {action} (known: {', '.join(known) or 'none'})")
